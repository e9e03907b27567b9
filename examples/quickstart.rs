//! Placeholder; replaced by the main job.
fn main() {}
