//! The Lambda control plane of `lambox serve`: the `2015-03-31` REST-JSON API as AWS answers
//! it (functions, versions, aliases, concurrency, account settings, Invoke), state that
//! survives restarts, and the scheduling of invokes onto `lambox_runtime` pools.
//!
//! # Map
//!
//! * [`model`]: wire types (serde, PascalCase), defined once for requests and answers;
//! * [`names`]: function names, partial/full ARNs and qualifiers, parsed at the edge;
//! * [`error`]: AWS error responses (status, `x-amzn-ErrorType`, `{"Type","message"}`);
//! * [`service`]: the operations and their validation ([`Lambda`]);
//! * `invoke` (methods on [`Lambda`]): Invoke, admission, async events;
//! * [`state`]: SQLite (`DATA/lambox-api.db`, WAL, versioned schema);
//! * [`images`]: `ImageUri` → a stored image pinned by digest;
//! * [`scheduler`]: function versions → pools; reserved and account concurrency;
//! * [`router`]: the axum router, `GET /health`, request ids.

pub mod error;
pub mod images;
mod invoke;
pub mod model;
pub mod names;
pub mod router;
pub mod scheduler;
pub mod service;
pub mod state;

pub use images::{ImageFailure, ImageResolver, LocalRegistry, ResolvedImage, StoreImages};
pub use router::router;
pub use scheduler::{LauncherFactory, MemoryTicket, Scheduler};
pub use service::{Lambda, ServiceConfig};
pub use state::{EventSummary, State};
