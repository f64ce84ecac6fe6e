//! A read-only view of an image's stored layers stacked as overlayfs would stack them, for
//! looking paths up without mounting anything.
