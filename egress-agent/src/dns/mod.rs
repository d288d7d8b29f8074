//! The DNS engine: turns configured hostnames into routed addresses, TTL-aware, and never
//! drops an address a client may still use (see [`state`]).

mod engine;
mod query;
mod resolve;
pub mod state;

pub use engine::{AddressStatus, DnsEngine, DnsSettings, HostStatus};
pub use query::QueryError;
pub use resolve::{Resolution, parse_resolv_conf, resolve};
pub use state::Health;
