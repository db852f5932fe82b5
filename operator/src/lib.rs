//! imagewarden's operator: turns `ScanRule`s into `ScanTask`s and `ImageScanResult`s.

pub mod crd;
pub mod notify;
pub mod registry;
