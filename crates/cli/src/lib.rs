//! The pieces of the `troupe` command that other binaries share (the Lambda adapter
//! opens backends and loads the model the same way).

pub mod backend;
pub mod model;
pub mod retention;
