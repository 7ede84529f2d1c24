//! `cutover upgrade`: handing the daemon's sockets to the binary that replaces it.

pub mod fdpass;
