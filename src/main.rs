//! The `gridwatch` command line: a thin shell over the library.

// No panic path reachable from input, state or configuration (README "Security").
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![deny(clippy::panic, clippy::unreachable, clippy::unimplemented)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use gridwatch::cli::docs::CompletionShell;
use gridwatch::cli::exit;
use gridwatch::cli::logging::LogFormatArg;
use gridwatch::cli::output::{print_line, OutputArgs};
use gridwatch::config::Config;
use gridwatch::decode::InputFormat;

/// mimalloc: the pipeline allocates many short-lived strings per event (decoding), where it
/// is markedly faster than the system allocator. Built with its `override` feature, it also
/// serves the C libraries' `malloc` and `free` (librdkafka, OpenSSL): librdkafka allocates a
/// message, its headers and each fetched record on one thread and frees them on another,
/// which glibc's allocator serves slowly (its functions were a fifth of the Kafka path's
/// profile samples; `docs/performance-journal.md`, session 38).
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time community-safety event-stream processor.
#[derive(Debug, Parser)]
#[command(name = "gridwatch", version, about, after_help = TOP_LEVEL_HELP)]
struct Cli {
    /// Log format on stderr (overrides the config's log.format); filter with RUST_LOG,
    /// e.g. RUST_LOG=info,gridwatch::sink=debug.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    command: Command,
}

/// Examples and exit codes under `gridwatch --help`.
const TOP_LEVEL_HELP: &str = "\
Examples:
  gridwatch run                                   # simulator, console on http://127.0.0.1:9750/
  gridwatch run --config gridwatch.toml --log-format json
  gridwatch simulate --events 100000 --out events.jsonl
  gridwatch replay --input events.jsonl --output-dir out
  gridwatch check-config gridwatch.toml
  gridwatch config show --config gridwatch.toml
  gridwatch completions bash > /usr/share/bash-completion/completions/gridwatch

Exit codes:
  0  success
  1  runtime failure (broker unreachable, write failed, ...)
  2  usage error (unknown flag, missing argument)
  3  configuration error (config or rules file missing or invalid)
  4  input file missing or unreadable
  5  finished, but more than --max-rejected-share of the input was rejected";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service (with no config: the simulator in real time, HTTP on 127.0.0.1:9750).
    #[command(
        after_help = "Examples:\n  gridwatch run\n  GRIDWATCH_CONFIG=/etc/gridwatch.toml gridwatch run --log-format json 2> gridwatch.log"
    )]
    Run {
        /// Config TOML file (layered over defaults, under GRIDWATCH_* variables).
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Replay a file as fast as possible and write windows, alerts and dead letters.
    #[command(
        after_help = "Examples:\n  gridwatch replay --input events.jsonl --output-dir out\n  gridwatch replay --input events.pb --format protobuf --output-dir out --max-rejected-share 0.1"
    )]
    Replay {
        /// Input file.
        #[arg(long)]
        input: PathBuf,
        /// Input format (default: detected from the file's first bytes).
        #[arg(long, value_enum)]
        format: Option<InputFormat>,
        /// Output directory for windows.jsonl, alerts.jsonl, dead_letter.jsonl.
        #[arg(long)]
        output_dir: PathBuf,
        /// Config TOML file (window, ingest, rules, privacy settings).
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Fail (exit code 5) when more than this share (0 to 1) of the records is
        /// dead-lettered.
        #[arg(long, default_value_t = gridwatch::cli::verdict::DEFAULT_MAX_REJECTED_SHARE, value_parser = gridwatch::cli::verdict::parse_share)]
        max_rejected_share: f64,
        /// Which thread runs the rules: `auto` gives them one of their own on 4 or more cores.
        #[arg(long, value_enum, default_value_t = gridwatch::replay::RulesThread::Auto)]
        rules_thread: gridwatch::replay::RulesThread,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write simulator events to a file.
    #[command(
        after_help = "Examples:\n  gridwatch simulate --events 100000 --out events.jsonl\n  gridwatch simulate --events 1000000 --format protobuf --rate-multiplier 10 --out events.pb"
    )]
    Simulate {
        /// Number of events.
        #[arg(long)]
        events: u64,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: InputFormat,
        /// Event time of the first event (RFC 3339).
        #[arg(long, default_value = "2026-03-02T00:00:00Z")]
        start: String,
        /// Multiplies every base rate.
        #[arg(long, default_value_t = 1.0)]
        rate_multiplier: f64,
        /// Config TOML file whose [simulator] scenarios are injected.
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Produce simulator events to a Kafka topic (a load generator): key = the community id
    /// of the event's cell, value = one IncidentEvent, header content-type.
    #[command(
        after_help = "Examples:\n  gridwatch produce --brokers localhost:9092 --topic gridwatch.events --events 100000\n  gridwatch produce --config gridwatch.toml --topic gridwatch.events --rate 500"
    )]
    Produce {
        /// Bootstrap servers, host:port[,host:port...] (default: the config's kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// Config TOML file whose [kafka] brokers, properties and property_files (TLS, SASL,
        /// compression) the producer uses, under GRIDWATCH_* variables; secrets never go on
        /// the command line.
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Destination topic.
        #[arg(long)]
        topic: String,
        /// Number of events (default: run until interrupted when --rate is given, else 10 000).
        #[arg(long)]
        events: Option<u64>,
        /// Events per second, steady day and night (each hour keeps its mix of types); event
        /// times follow the wall clock from --start (default: now). Without it: as fast as the
        /// broker acknowledges, event times a backfill of the recent past ending about now.
        #[arg(
            long,
            value_parser = positive_events_per_second,
            allow_negative_numbers = true,
            conflicts_with = "rate_multiplier"
        )]
        rate: Option<f64>,
        /// Payload format.
        #[arg(long, value_enum, default_value = "protobuf")]
        format: gridwatch::config::KafkaPayloadFormat,
        /// RNG seed.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Event time of the first event (RFC 3339); default: now with --rate, else where the
        /// simulator's hourly rates end the events about now.
        #[arg(long)]
        start: Option<String>,
        /// Multiplies every base rate (without --rate).
        #[arg(long, default_value_t = 1.0)]
        rate_multiplier: f64,
        /// Give up when no broker answers within this long (problems are logged every 2 s).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        connect_timeout: std::time::Duration,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Dead-letter tools.
    #[command(
        after_help = "Examples:\n  gridwatch dlq replay --brokers localhost:9092 --to gridwatch.events --reason unknown_grid --dry-run"
    )]
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The fraud target's tools.
    #[command(
        after_help = "Examples:\n  gridwatch fraud import --config gridwatch.toml --from cases-2026.csv --dry-run"
    )]
    Fraud {
        #[command(subcommand)]
        command: FraudCommand,
    },
    /// Configuration tools.
    #[command(
        after_help = "Examples:\n  gridwatch config show\n  GRIDWATCH_WINDOW__SIZE=2m gridwatch config show --config gridwatch.toml"
    )]
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Validate a config file and the rules file it names (or a rules file itself); report every problem.
    #[command(
        after_help = "Examples:\n  gridwatch check-config gridwatch.toml\n  gridwatch check-config seeds/rules.toml"
    )]
    CheckConfig {
        /// The config (or rules) TOML file.
        file: PathBuf,
    },
    /// Probe the running service's /healthz over loopback (the image's HEALTHCHECK: it has no
    /// curl); exit 0 on 200. Reads http.listen from the same config as `run`.
    #[command(
        after_help = "Examples:\n  gridwatch healthcheck\n  gridwatch healthcheck --config gridwatch.toml --timeout 1s"
    )]
    Healthcheck {
        /// Config TOML file (layered over defaults, under GRIDWATCH_* variables).
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Give up after this long.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Regenerate the reference data in seeds/ (deterministic).
    #[command(
        after_help = "Examples:\n  gridwatch gen-seeds\n  gridwatch gen-seeds --out-dir /tmp/seeds"
    )]
    GenSeeds {
        /// Output directory.
        #[arg(long, default_value = "seeds")]
        out_dir: PathBuf,
    },
    /// Print a shell completion script to stdout.
    #[command(
        after_help = "Examples:\n  gridwatch completions bash > /usr/share/bash-completion/completions/gridwatch\n  gridwatch completions zsh > \"${fpath[1]}/_gridwatch\"\n  gridwatch completions fish > ~/.config/fish/completions/gridwatch.fish"
    )]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page (roff) to stdout.
    #[command(
        after_help = "Examples:\n  gridwatch man > /usr/share/man/man1/gridwatch.1\n  gridwatch man | man -l -"
    )]
    Man,
}

#[derive(Debug, Subcommand)]
enum FraudCommand {
    /// Import the case history of the months before gridwatch saw the stream, so the fraud
    /// report covers the real year to date (CSV: community_id,year,month,fraud_warnings,
    /// fraud_reported,fraud_cases_filed[,fraud_dissuaded]; each row is one community's whole
    /// month). Validated whole: every bad row is listed and nothing is imported. Stored in
    /// fraud.history_path and, with Kafka outputs, on the status topic; importing again
    /// replaces the previous import.
    #[command(
        after_help = "Examples:\n  gridwatch fraud import --config gridwatch.toml --from cases-2026.csv --dry-run\n  gridwatch fraud import --config gridwatch.toml --from cases-2026.csv"
    )]
    Import {
        /// The CSV file of monthly counts per community.
        #[arg(long)]
        from: PathBuf,
        /// Config TOML file (the registry, `[fraud]` and Kafka settings).
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// Validate and summarize only; store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults, then the file, then GRIDWATCH_*
    /// variables), one `key = value  # source` line per setting; secrets print as ***.
    #[command(
        after_help = "Examples:\n  gridwatch config show --config gridwatch.toml\n  gridwatch config show | grep '# env'"
    )]
    Show {
        /// Config TOML file (layered over defaults, under GRIDWATCH_* variables).
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Re-inject dead letters after a fix: read every partition of the dead-letter topic up to
    /// its current end and produce the records of the selected reasons to --to (same value and
    /// key, content-type when the original format is known, header gridwatch_replayed_from).
    #[command(
        after_help = "Examples:\n  gridwatch dlq replay --brokers localhost:9092 --to gridwatch.events --reason unknown_grid --dry-run\n  gridwatch dlq replay --config gridwatch.toml --to gridwatch.events --stall-timeout 10s"
    )]
    Replay {
        /// Bootstrap servers, host:port[,host:port...] (default: the config's kafka.brokers).
        #[arg(long)]
        brokers: Option<String>,
        /// Config TOML file whose [kafka] brokers, properties and property_files (TLS, SASL)
        /// the consumer and producer use, under GRIDWATCH_* variables; --property and
        /// --property-file override them.
        #[arg(long, env = "GRIDWATCH_CONFIG")]
        config: Option<PathBuf>,
        /// The dead-letter topic to read.
        #[arg(long, default_value = gridwatch::tools::dlq_replay::DEFAULT_DEAD_LETTER_TOPIC)]
        from: String,
        /// The topic to produce the replayed records to (e.g. the original input topic).
        #[arg(long)]
        to: String,
        /// Replay only dead letters of this reason (repeatable; default: every reason).
        #[arg(long = "reason", value_parser = clap::builder::PossibleValuesParser::new(
            gridwatch::dead_letter::DeadLetterReason::ALL.map(|reason| reason.as_str())
        ))]
        reasons: Vec<String>,
        /// Only count what would be replayed; produce nothing.
        #[arg(long)]
        dry_run: bool,
        /// A librdkafka property key=value for the consumer and producer (TLS, SASL, timeouts;
        /// repeatable).
        /// Secret properties (`sasl.password`, `ssl.key.password`…) are refused here: the
        /// command line is visible to every local user; use --property-file.
        #[arg(long = "property", value_parser = gridwatch::tools::dlq_replay::parse_property)]
        properties: Vec<(String, String)>,
        /// A librdkafka property whose value is read from a file, key=path (secrets such as
        /// `sasl.password=/run/secrets/kafka-password`; a trailing newline is dropped;
        /// repeatable).
        #[arg(long = "property-file", value_parser = gridwatch::tools::dlq_replay::parse_property)]
        property_files: Vec<(String, String)>,
        /// Fail when reading or acknowledgement makes no progress for this long.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        stall_timeout: std::time::Duration,
        /// Give up when no broker answers within this long (problems are logged every 2 s).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        connect_timeout: std::time::Duration,
        #[command(flatten)]
        output: OutputArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match execute(cli.command, cli.log_format) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            use std::io::Write;
            // A closed stderr is no reason to panic on the way out.
            let _ = writeln!(
                std::io::stderr().lock(),
                "error: {}",
                exit::error_report(&error)
            );
            std::process::ExitCode::from(exit::exit_code(&error))
        }
    }
}

fn execute(command: Command, log_format: Option<LogFormatArg>) -> anyhow::Result<()> {
    let init_logging = |config: &Config| {
        let format = log_format.map_or(config.log.format, Into::into);
        gridwatch::cli::logging::init(&config.log.level, format);
    };
    match command {
        Command::Run { config } => {
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            // Before anything is announced: librdkafka refuses settings it cannot use (no
            // SASL provider, a missing CA file) only when a client is created.
            check_kafka_client_settings(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            runtime.block_on(async move {
                // Before the address is announced: from then on SIGTERM is a clean shutdown.
                let shutdown = shutdown_signal();
                let listener = tokio::net::TcpListener::bind(&config.http.listen)
                    .await
                    .with_context(|| format!("binding {}", config.http.listen))?;
                let address = listener.local_addr()?;
                let scheme = if config.http.tls_cert_file.is_some() {
                    "https"
                } else {
                    "http"
                };
                // On stderr in the chosen log format, like every other log line: stdout
                // carries no chatter.
                tracing::info!(
                    %address,
                    url = %format!("{scheme}://{address}"),
                    metrics = %format!("{scheme}://{address}/metrics"),
                    "listening"
                );
                gridwatch::service::run(config, listener, shutdown).await?;
                Ok(())
            })
        }
        Command::Replay {
            input,
            format,
            output_dir,
            config,
            max_rejected_share,
            rules_thread,
            output,
        } => {
            let started = std::time::Instant::now();
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            exit::InputError::check_readable(&input)?;
            let format = match format {
                Some(format) => format,
                None => gridwatch::cli::sniff::sniff_file(&input)?,
            };
            let rules = gridwatch::service::load_rules(&config)?;
            let options = gridwatch::replay::ReplayOptions {
                input,
                format,
                output_dir,
                show_progress: !output.quiet,
                rules_thread,
            };
            // The registry loads while the input is read and decoded.
            let summary = gridwatch::replay::replay_loading_registry(
                &options,
                &config,
                || gridwatch::grid::GridRegistry::of_seeds(config.seeds.dir.as_deref()),
                rules,
            )?;
            output
                .print_summary("replay", &summary, started)
                .context("writing the summary")?;
            gridwatch::cli::verdict::judge_replay(&summary, format, max_rejected_share)?;
            Ok(())
        }
        Command::Simulate {
            events,
            seed,
            out,
            format,
            start,
            rate_multiplier,
            config,
            output,
        } => {
            let started = std::time::Instant::now();
            let config = Config::load(config.as_deref())?;
            let start_millis = gridwatch::time::rfc3339_to_millis(&start)
                .with_context(|| format!("--start {start:?} is not RFC 3339"))?;
            let registry = gridwatch::service::load_registry(&config)?;
            let settings = gridwatch::source::simulator::SimulatorSettings {
                seed,
                start_millis,
                rate_multiplier,
                scenarios: config.simulator.scenarios.clone(),
                ..gridwatch::source::simulator::SimulatorSettings::default()
            };
            let mut simulator = gridwatch::source::simulator::Simulator::new(settings, registry)?;
            let mut writer = gridwatch::source::file::EventWriter::create(&out, format)?;
            let mut progress =
                gridwatch::cli::progress::Progress::new(output.progress_mode(), "events", events);
            for written in 0..events {
                writer.write(&simulator.next_event())?;
                if written % 4096 == 0 {
                    progress.set(written);
                }
            }
            writer.finish()?;
            progress.set(events);
            progress.finish();
            let summary = gridwatch::cli::output::SimulateSummary {
                events,
                out,
                format: format.as_str().to_string(),
            };
            output
                .print_summary("simulate", &summary, started)
                .context("writing the summary")?;
            Ok(())
        }
        Command::Produce {
            brokers,
            config: config_path,
            topic,
            events,
            rate,
            format,
            seed,
            start,
            rate_multiplier,
            connect_timeout,
            output,
        } => {
            let started = std::time::Instant::now();
            let config = Config::default();
            // librdkafka's own errors (a refused SASL sign-in, an untrusted certificate) are
            // logged: the producer's error alone would only say that delivery timed out.
            init_logging(&config);
            let kafka = Config::load_kafka_settings(config_path.as_deref())?;
            check_tool_settings(&kafka.properties)?;
            let start_millis = match &start {
                Some(text) => Some(
                    gridwatch::time::rfc3339_to_millis(text)
                        .with_context(|| format!("--start {text:?} is not RFC 3339"))?,
                ),
                None => None,
            };
            let events = events.or(if rate.is_some() { None } else { Some(10_000) });
            let registry = gridwatch::service::load_registry(&config)?;
            let settings = gridwatch::source::simulator::SimulatorSettings {
                seed,
                rate_multiplier,
                ..gridwatch::source::simulator::SimulatorSettings::default()
            };
            let mut simulator = gridwatch::tools::produce::load_generator_simulator(
                settings,
                registry,
                rate,
                events,
                start_millis,
                gridwatch::time::wall_clock_millis(),
            )?;
            tracing::info!(
                first_event_time = %gridwatch::time::millis_to_rfc3339(simulator.settings().start_millis),
                events_per_second = ?rate,
                "producing simulator events"
            );
            let options = gridwatch::tools::produce::ProduceOptions {
                brokers: brokers.unwrap_or(kafka.brokers),
                topic,
                events,
                rate_per_second: rate,
                format,
                properties: kafka.properties,
            };
            gridwatch::cli::connectivity::wait_for_brokers(
                &options.brokers,
                &options.properties,
                connect_timeout,
            )?;
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            let mut progress = match options.events {
                Some(total) => {
                    gridwatch::cli::progress::Progress::new(output.progress_mode(), "events", total)
                }
                None => {
                    gridwatch::cli::progress::Progress::counter(output.progress_mode(), "events")
                }
            };
            let mut handed = 0;
            let sent = runtime.block_on(async {
                let mut on_sent = |sent: u64| {
                    handed = sent;
                    progress.set(sent);
                };
                tokio::select! {
                    sent = gridwatch::tools::produce::produce_simulated_with_progress(&options, &mut simulator, &mut on_sent) => sent.map(Some),
                    () = shutdown_signal() => Ok(None),
                }
            });
            progress.finish();
            let sent = sent?;
            let summary = gridwatch::cli::output::ProduceSummary {
                produced: sent.unwrap_or(handed),
                topic: options.topic.clone(),
                interrupted: sent.is_none(),
            };
            output
                .print_summary("produce", &summary, started)
                .context("writing the summary")?;
            Ok(())
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    brokers,
                    config: config_path,
                    from,
                    to,
                    reasons,
                    dry_run,
                    properties,
                    property_files,
                    stall_timeout,
                    connect_timeout,
                    output,
                },
        } => {
            let started = std::time::Instant::now();
            init_logging(&Config::default());
            let kafka = Config::load_kafka_settings(config_path.as_deref())?;
            let brokers = brokers.unwrap_or(kafka.brokers);
            let mut merged = kafka.properties;
            merged.extend(kafka_properties(properties, property_files)?);
            check_tool_settings(&merged)?;
            gridwatch::cli::connectivity::wait_for_brokers(&brokers, &merged, connect_timeout)?;
            let options = gridwatch::tools::dlq_replay::ReplayOptions {
                reasons: gridwatch::tools::dlq_replay::ReasonFilter::only(reasons),
                dry_run,
                properties: merged,
                stall_timeout,
                ..gridwatch::tools::dlq_replay::ReplayOptions::new(&brokers, &from, &to)
            };
            let mut progress =
                gridwatch::cli::progress::Progress::counter(output.progress_mode(), "dead letters");
            let summary = gridwatch::tools::dlq_replay::replay_dead_letters_with_progress(
                &options,
                &mut |read| progress.set(read),
            );
            progress.finish();
            output
                .print_summary("dlq replay", &summary?, started)
                .context("writing the summary")?;
            Ok(())
        }
        Command::Fraud {
            command:
                FraudCommand::Import {
                    from,
                    config,
                    dry_run,
                    output,
                },
        } => {
            let started = std::time::Instant::now();
            let config = Config::load(config.as_deref())?;
            init_logging(&config);
            let registry = gridwatch::service::load_registry(&config)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
            let mut progress =
                gridwatch::cli::progress::Progress::counter(output.progress_mode(), "steps");
            let mut steps = 0;
            let summary = runtime.block_on(
                gridwatch::tools::fraud_import::import_history_with_progress(
                    &config,
                    &registry,
                    &from,
                    dry_run,
                    gridwatch::time::wall_clock_millis(),
                    &mut |step| {
                        steps += 1;
                        progress.step(step);
                        progress.set(steps);
                    },
                ),
            );
            progress.finish();
            output
                .print_summary("fraud import", &summary?, started)
                .context("writing the summary")?;
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Show { config },
        } => {
            let (config, layers) = Config::load_with_layers(config.as_deref())?;
            let text = gridwatch::cli::show::render(&layers.show(&config));
            gridwatch::cli::output::write_stdout(text.as_bytes())
                .context("writing the configuration")?;
            Ok(())
        }
        Command::CheckConfig { file } => check_config(&file),
        Command::Healthcheck { config, timeout } => healthcheck(config.as_deref(), timeout),
        Command::Completions { shell } => {
            let mut command = Cli::command();
            let mut script = Vec::new();
            gridwatch::cli::docs::write_completions(&mut command, shell, &mut script);
            gridwatch::cli::output::write_stdout(&script).context("writing the completions")?;
            Ok(())
        }
        Command::Man => {
            let mut page = Vec::new();
            gridwatch::cli::docs::write_man_page(Cli::command(), &mut page)
                .context("writing the man page")?;
            gridwatch::cli::output::write_stdout(&page).context("writing the man page")?;
            Ok(())
        }
        Command::GenSeeds { out_dir } => {
            gridwatch::tools::gen_seeds::generate_seeds(&out_dir)?;
            print_line(&format!("seeds written to {}", out_dir.display()))?;
            Ok(())
        }
    }
}

/// `--rate`: a positive, finite number of events per second (zero or a negative number would
/// otherwise mean "as fast as possible" without saying so).
fn positive_events_per_second(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a positive number of events per second"
        )),
    }
}

/// The librdkafka properties of `dlq replay`: `--property` ones (never a secret: argv is
/// public), then `--property-file` ones read from their files.
fn kafka_properties(
    properties: Vec<(String, String)>,
    property_files: Vec<(String, String)>,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut merged = std::collections::BTreeMap::new();
    for (key, value) in properties {
        if gridwatch::secret::is_secret_kafka_property(&key) {
            anyhow::bail!(
                "--property {key}=… would show a secret in the process list; use --property-file {key}=PATH"
            );
        }
        merged.insert(key, value);
    }
    for (key, path) in property_files {
        let content = std::fs::read_to_string(&path)
            .with_context(|| format!("reading --property-file {key}={path}"))?;
        merged.insert(key, content.trim_end_matches(['\n', '\r']).to_string());
    }
    Ok(merged)
}

/// Whether the service creates Kafka clients with `config`: a Kafka source or output topics.
fn uses_kafka(config: &Config) -> bool {
    config.source.kind == gridwatch::config::SourceKind::Kafka || config.kafka.sinks.enabled
}

/// librdkafka's verdict on the service's Kafka client settings, when it uses Kafka: every
/// problem at once, secrets redacted.
fn check_kafka_client_settings(config: &Config) -> anyhow::Result<()> {
    if !uses_kafka(config) {
        return Ok(());
    }
    let problems = gridwatch::kafka::check_client_settings(&config.kafka);
    if problems.is_empty() {
        return Ok(());
    }
    Err(gridwatch::config::ConfigError::Invalid { problems }.into())
}

/// librdkafka's verdict on a command-line tool's client settings.
fn check_tool_settings(
    properties: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let problems = gridwatch::kafka::check_tool_client_settings(properties);
    if problems.is_empty() {
        return Ok(());
    }
    Err(gridwatch::config::ConfigError::Invalid { problems }.into())
}

/// `gridwatch healthcheck`: 200 from `/healthz` on the configured port, over loopback.
fn healthcheck(
    config: Option<&std::path::Path>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    use gridwatch::http::probe;
    let config = Config::load(config)?;
    if config.http.tls_cert_file.is_some() {
        anyhow::bail!(
            "healthcheck speaks plain HTTP but http.tls_cert_file is set; probe /healthz with an HTTPS client (e.g. a Kubernetes httpGet probe with scheme HTTPS)"
        );
    }
    let address = probe::probe_address(&config.http.listen)?;
    match probe::http_status(address, "/healthz", timeout)? {
        200 => {
            print_line(&format!("healthy ({address}/healthz answered 200)"))?;
            Ok(())
        }
        status => anyhow::bail!("unhealthy: {address}/healthz answered {status}"),
    }
}

/// Validates a config file (and the rules file it names), or a rules file on its own.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).map_err(|error| exit::InputError::from_io(file, &error))?;
    let invalid = |message: String| exit::InvalidFile {
        path: file.display().to_string(),
        message,
    };
    let kind = gridwatch::cli::check::file_kind(&text).map_err(invalid)?;
    if kind == gridwatch::cli::check::FileKind::Rules {
        let pane_size_millis = Config::default().window_settings().size_millis;
        let rules = gridwatch::rules::RuleSet::from_toml_str(&text, pane_size_millis)
            .map_err(|error| invalid(error.to_string()))?;
        print_rules_ok(file, &rules)?;
        return Ok(());
    }
    let config = Config::load(Some(file))?;
    check_kafka_client_settings(&config)?;
    let rules = gridwatch::service::load_rules(&config)?;
    print_rules_ok(file, &rules)?;
    if uses_kafka(&config) {
        let (_, librdkafka_version) = rdkafka::util::get_rdkafka_version();
        print_line(&format!("kafka client settings: accepted by librdkafka {librdkafka_version} (no broker contacted)"))?;
    }
    Ok(())
}

/// `check-config`'s verdict on a valid file.
fn print_rules_ok(file: &std::path::Path, rules: &gridwatch::rules::RuleSet) -> anyhow::Result<()> {
    print_line(&format!(
        "{}: ok (rules version {}, {} rules)",
        file.display(),
        rules.version(),
        rules.rules().len()
    ))?;
    Ok(())
}

/// Resolves when the registered signal arrives; never when it could not be registered (the
/// error is logged).
#[cfg(unix)]
async fn signal_received(
    registered: std::io::Result<tokio::signal::unix::Signal>,
    name: &'static str,
) {
    match registered {
        Ok(mut stream) => {
            stream.recv().await;
        }
        Err(error) => {
            tracing::error!(%error, signal = name, "cannot listen for the signal");
            std::future::pending::<()>().await;
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is called, not when
/// the future is first polled: a signal that arrives while the service is busy starting (or
/// before its loop first polls this future) is a shutdown, never the default action that
/// would kill the process without flushing.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let registered = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = registered;
            tokio::select! {
                _ = signal_received(interrupt, "SIGINT") => tracing::info!("received SIGINT; shutting down"),
                _ = signal_received(terminate, "SIGTERM") => tracing::info!("received SIGTERM; shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::error!(%error, "cannot listen for ctrl-c");
                std::future::pending::<()>().await;
            }
            tracing::info!("received ctrl-c; shutting down");
        }
    }
}
