//! A layer as the scanner reads it: the (optionally compressed) blob detected, the tar
//! walked, every wanted file handed to its analyzers.
#![no_main]

use imagewarden_scanner::analyzer::default_analyzers;
use imagewarden_scanner::layer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = layer::scan_layer(std::io::Cursor::new(data), None, None, &default_analyzers());
});
