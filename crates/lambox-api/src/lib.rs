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
//! * [`router`]: the axum router, `GET /health`, request ids;
//! * [`logs`]: function logs in `DATA/logs/` (segments, retention, the scheduler's sink);
//! * [`logs_api`]: the CloudWatch Logs subset that reads them (`X-Amz-Target: Logs_20140328.*`);
//! * [`sigv4`]: AWS Signature Version 4 verification (`lambox serve --auth sigv4`).

pub mod error;
pub mod images;
mod invoke;
pub mod logs;
pub mod logs_api;
pub mod model;
pub mod names;
pub mod router;
pub mod scheduler;
pub mod service;
pub mod sigv4;
pub mod state;

pub use images::{ImageFailure, ImageResolver, LocalRegistry, ResolvedImage, StoreImages};
pub use logs::LogStore;
pub use router::{router, router_with_auth};
pub use scheduler::{LauncherFactory, MemoryTicket, Scheduler};
pub use service::{Lambda, ServiceConfig};
pub use state::{EventSummary, State};
