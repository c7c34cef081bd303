//! One watched project: its state, apart from the network, and its poll cycle.
//!
//! - [`state`]: everything a cycle reads and writes (tracker, health, activity, identity),
//!   behind a `std::sync::Mutex` locked for one synchronous step at a time.
//! - [`followups`]: failed jobs waiting for their failure class (`[failures] classify`).
//! - [`hooks`]: a Job Hook applied as an observation, and whether hooks can be trusted.
//! - [`cycle`]: the poller: a cycle plans each request from the state, sends it with no lock
//!   held, and applies the answer under the lock (tracker and job metrics together).

pub mod cycle;
pub mod followups;
pub mod hooks;
pub mod state;
