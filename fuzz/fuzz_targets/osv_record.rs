//! One OSV record compiled into an index, which is then opened and walked.
#![no_main]

use imagewarden_scanner::vulndb::{Db, DbBuilder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = DbBuilder::new();
    b.add_json(data, "fuzz");
    let mut out = Vec::new();
    if b.write(&mut out).is_ok() {
        let db = Db::from_bytes(out, "fuzz").expect("an index just written opens");
        for (eco, name) in db.packages().take(20) {
            for e in db
                .affected(&eco, &name)
                .expect("entries of a listed package")
            {
                let _ = db
                    .advisory(e.advisory)
                    .expect("an advisory the index names");
            }
        }
    }
});
