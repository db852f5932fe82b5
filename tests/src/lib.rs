//! Fixtures that start the real parts imagewarden talks to, for tests.
