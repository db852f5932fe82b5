//! A compiled index file, opened and walked. Mutants seldom keep the checksum trailer, so
//! the trailer is recomputed first: the offset checks are what is exercised.
#![no_main]

use imagewarden_scanner::vulndb::Db;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let mut bytes = data.to_vec();
    let body = bytes.len() - 32;
    let sum = Sha256::digest(&bytes[..body]);
    bytes[body..].copy_from_slice(&sum);
    if let Ok(db) = Db::from_bytes(bytes, "fuzz") {
        for (eco, name) in db.packages().take(50) {
            if let Ok(entries) = db.affected(&eco, &name) {
                for e in entries {
                    let _ = db.advisory(e.advisory);
                }
            }
        }
    }
});
