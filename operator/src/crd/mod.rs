//! Custom resources of imagewarden (`imagewarden.io/v1alpha1`).
