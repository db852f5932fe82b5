//! Which tags an ImageScanResult lists: the tags that point at its digest as of the last
//! discovery or push that saw them, each with when it was last seen (pure).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::SeenTag;
use crate::registry::TagFilter;

/// What one discovery or push saw of one repository.
#[derive(Clone, Debug, Default)]
pub struct TagObservation {
    /// Tag → the digest it points at now.
    pub resolved: BTreeMap<String, String>,
    /// When set, the observation covers every tag this filter matches: a matching tag
    /// that is not in `resolved` no longer exists (or is no longer in scope). Unset (a
    /// push, or a `maxTags` cut), tags not in `resolved` are left as they were.
    pub complete: Option<TagFilter>,
}

/// The tags of a result for `digest` after `observation`, at `now`.
///
/// `existing` are the result's recorded tags; `legacy` its tag names, for results written
/// before each tag had a time (those count as seen at `fallback_seen`, e.g. the result's
/// creation). A tag resolved to another digest leaves, a tag resolved to this digest is
/// refreshed (or added at the end), and a tag the observation covers without finding it
/// leaves; every other tag keeps its record.
pub fn merge_tags(
    existing: &[SeenTag],
    legacy: &[String],
    fallback_seen: &Time,
    digest: &str,
    observation: &TagObservation,
    now: &Time,
) -> Vec<SeenTag> {
    let mut records: Vec<SeenTag> = existing.to_vec();
    for tag in legacy {
        if !records.iter().any(|r| &r.tag == tag) {
            records.push(SeenTag {
                tag: tag.clone(),
                last_seen: fallback_seen.clone(),
            });
        }
    }
    let mut out: Vec<SeenTag> = Vec::with_capacity(records.len());
    for record in records {
        match observation.resolved.get(&record.tag) {
            Some(d) if d == digest => out.push(SeenTag {
                tag: record.tag,
                last_seen: now.clone(),
            }),
            Some(_) => {}
            None if observation
                .complete
                .as_ref()
                .is_some_and(|f| f.matches(&record.tag)) => {}
            None => out.push(record),
        }
    }
    for (tag, d) in &observation.resolved {
        if d == digest && !out.iter().any(|r| &r.tag == tag) {
            out.push(SeenTag {
                tag: tag.clone(),
                last_seen: now.clone(),
            });
        }
    }
    out
}

/// The tag names of `records`, in order.
pub fn tag_names(records: &[SeenTag]) -> Vec<String> {
    records.iter().map(|r| r.tag.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaa";
    const B: &str = "sha256:bbbb";

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap())
    }

    fn seen(tag: &str, second: i64) -> SeenTag {
        SeenTag {
            tag: tag.into(),
            last_seen: at(second),
        }
    }

    fn observed(pairs: &[(&str, &str)], complete: Option<&str>) -> TagObservation {
        TagObservation {
            resolved: pairs
                .iter()
                .map(|(t, d)| (t.to_string(), d.to_string()))
                .collect(),
            complete: complete.map(|f| TagFilter::new(f).unwrap()),
        }
    }

    #[test]
    fn a_tag_moved_to_another_digest_leaves_the_old_result() {
        let existing = [seen("v1", 100), seen("stable", 100)];
        let obs = observed(&[("v1", B), ("stable", A)], None);
        let a = merge_tags(&existing, &[], &at(0), A, &obs, &at(200));
        assert_eq!(a, [seen("stable", 200)]);
        let b = merge_tags(&[], &[], &at(0), B, &obs, &at(200));
        assert_eq!(b, [seen("v1", 200)]);
    }

    #[test]
    fn a_push_adds_its_tag_and_leaves_unseen_tags_alone() {
        let existing = [seen("v1", 100)];
        let obs = observed(&[("v2", A)], None);
        assert_eq!(
            merge_tags(&existing, &[], &at(0), A, &obs, &at(300)),
            [seen("v1", 100), seen("v2", 300)]
        );
    }

    #[test]
    fn a_complete_discovery_drops_matching_tags_it_did_not_find_and_keeps_others() {
        // `v1` matches the rule's filter and was not found: deleted from the registry.
        // `dev` is outside the filter: this discovery says nothing about it.
        let existing = [seen("v1", 100), seen("dev", 100), seen("v2", 100)];
        let obs = observed(&[("v2", A)], Some("^v"));
        assert_eq!(
            merge_tags(&existing, &[], &at(0), A, &obs, &at(400)),
            [seen("dev", 100), seen("v2", 400)]
        );
    }

    #[test]
    fn results_written_before_tag_times_get_the_fallback_time() {
        let legacy = ["v1".to_string(), "v2".to_string()];
        let obs = observed(&[("v2", A)], None);
        assert_eq!(
            merge_tags(&[], &legacy, &at(50), A, &obs, &at(500)),
            [seen("v1", 50), seen("v2", 500)]
        );
        assert_eq!(tag_names(&[seen("x", 1), seen("y", 2)]), ["x", "y"]);
    }
}
