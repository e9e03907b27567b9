//! Placeholder; replaced by the simulator server.
fn main() {}
