//! A seeded, realistic simulator of the event streams of Hebi's 162 smart-security
//! communities. [`crate::source::simulator::SimulatorSource`] paces it as a live source;
//! `gridwatch simulate` writes it to a file.
//!
//! Rooms: [`settings`] (what is asked for), [`profiles`] (rates and daily profiles: the table
//! below), [`scenarios`] (incidents on top of the background), [`generator`] (the background
//! processes and event shapes) and [`disorder`] (delivery delays and duplicates).
//!
//! # Model
//!
//! Background events are independent Poisson processes, one per (grid cell, event type). A
//! device type only occurs in a cell that has a device able to report it (a cell without
//! smoke detectors never reports `FIRE_SMOKE`); fraud-chain events need no device and occur
//! in every cell of a community with residents. Each type has a base rate and an hour-of-day
//! profile (local time, UTC+8) whose mean over the day is 1, so the base rate is the daily
//! mean. The rates (before [`SimulatorSettings::rate_multiplier`]) model a grid cell of about
//! 300 households:
//!
//! | type | rate | daily profile |
//! |---|---|---|
//! | FIRE_SMOKE | 0.03 / cell / day (mostly cooking smoke) | meal times |
//! | GAS_LEAK | 0.005 / cell / day | meal times |
//! | ELECTRICAL_FAULT | 0.02 / cell / day | evening load |
//! | SOS | 0.02 / cell / day | mild evening peak |
//! | ELDER_FALL | 0.01 / cell / day | early morning |
//! | ELDER_INACTIVE | 0.015 / cell / day | late morning (no activity since night) |
//! | PERIMETER_INTRUSION | 0.4 / cell / day | night |
//! | TRIPWIRE | 0.6 / cell / day | night |
//! | HIGH_ALTITUDE_THROW | 0.05 / cell / day | daytime activity |
//! | DOOR_FORCED | 0.1 / cell / day | night |
//! | DEVICE_TAMPER | 0.03 / cell / day | night |
//! | EBIKE_IN_ELEVATOR | 3 / cell / day | daytime activity |
//! | EBIKE_CHARGING | 0.4 / cell / day | evening load |
//! | FIRE_LANE_BLOCKED | 1.5 / cell / day | daytime activity |
//! | LOITERING | 25 / cell / day | daytime activity |
//! | CROWD_GATHERING | 2 / cell / day | daytime activity |
//! | TAILGATING | 40 / cell / day | daytime activity |
//! | FRAUD_WARNING | 120 / 10,000 residents / year | office hours |
//! | FRAUD_DISSUADED | 90 / 10,000 residents / year | office hours |
//! | FRAUD_REPORTED | 12 / 10,000 residents / year | office hours |
//! | FRAUD_CASE_FILED | 8 / 10,000 residents / year | office hours |
//! | DEVICE_OFFLINE | 0.2 / cell / day | flat |
//! | VIDEO_LOSS | 0.1 / cell / day | flat |
//!
//! Fraud rates are per resident: a cell's rate is its community's
//! [`Community::population`](crate::grid::Community) divided by the community's cell count.
//! Filed cases (8 per 10,000 residents per year) sit in the 6–10 range typical of a Chinese
//! city before the anti-fraud campaign.
//!
//! # Generation
//!
//! Because every profile is constant within an hour, the superposition of all background
//! processes is, within one hour, a single Poisson process of the total rate of that hour: the
//! simulator draws the next city-wide arrival from an exponential with that total rate (a draw
//! that crosses the hour boundary restarts at the boundary, which is exact by
//! memorylessness), then picks the (cell, type) with a per-hour alias table
//! ([`rand_distr::weighted::WeightedAliasIndex`]). Scenario modulations (fraud waves, outages)
//! are applied by thinning: an entry affected by a scenario is weighted by its largest
//! multiplier and accepted with probability `multiplier(t) / max`.
//!
//! Scenario bursts (fires, intrusion bursts, the `DEVICE_OFFLINE` events of an outage) are
//! scheduled events merged with the background stream by event time. Scenario events always
//! carry `grid_id`, `community_id` and (when the cell has a suitable device) `device_id`, and an
//! attribute `scenario` naming their scenario kind.
//!
//! # Delivery
//!
//! Each event gets a delivery delay in `[0, max_delivery_delay_millis]` (mostly a few hundred
//! milliseconds, sometimes up to the bound); `received_at = occurred_at + delay`, and events
//! are handed out in delivery order. Hence an event never arrives more than
//! `max_delivery_delay_millis` (event time) after an event that occurred later than it. A
//! fraction of events is delivered twice (same `event_id`, identical content, the copy later
//! but still within the bound).
//!
//! Everything is deterministic for a seed ([`rand_chacha::ChaCha8Rng`]).

// No panic path reachable from input, state or configuration (README "Security").

pub mod disorder;
pub mod generator;
pub mod profiles;
pub mod scenarios;
pub mod settings;

pub use generator::Simulator;
pub use scenarios::{Scenario, ScenarioDuration, ScenarioTime};
pub use settings::{SimulatorError, SimulatorSettings};

#[cfg(test)]
pub(crate) mod tests;
