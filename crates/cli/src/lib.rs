//! The pieces of the `troupe` command that other binaries share (the Lambda adapter
//! opens backends and loads the model the same way).

pub mod auth;
pub mod backend;
pub mod keys;
pub mod model;
pub mod retention;
