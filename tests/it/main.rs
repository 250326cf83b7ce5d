//! The integration tests, as one binary: every file below is a module, `support` holds the
//! helpers they share. One binary links rdkafka and the service once instead of once per
//! file. (`tests/privacy.rs` stays apart: it installs a process-wide log subscriber.)

mod support;

mod alert_routing;
mod alertmanager;
mod api;
mod city_read_model;
mod cli;
mod cli_ux;
mod clock_skew;
mod console_browser;
mod dead_letters;
mod deploy_consistency;
mod deploy_validate;
mod dlq;
mod fraud_api;
mod fuzz;
mod golden;
mod http_security;
mod kafka;
mod kafka_recovery;
mod kafka_security;
mod prometheus;
mod properties;
mod reload;
mod secrets;
mod service;
mod untrusted_state;
mod webhook;
