//! The FUSE filesystem.
