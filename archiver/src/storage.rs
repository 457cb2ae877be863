//! The archive itself: the object store ([`store`]), object names ([`layout`]), and reading
//! objects back ([`objreader`], [`readback`]).

pub mod layout;
pub mod objreader;
pub mod readback;
pub mod store;
