//! Whether a finished replay succeeded: a run that dead-lettered most of its input is a
//! failure with a one-line diagnosis, not a success with a long dead-letter file.

use crate::decode::InputFormat;
use crate::replay::ReplaySummary;

use super::exit::MostlyRejected;

/// The default share of records that may be dead-lettered before `replay` fails.
pub const DEFAULT_MAX_REJECTED_SHARE: f64 = 0.5;

/// `Ok` when at most `max_rejected_share` of `summary`'s records were dead-lettered, else
/// the diagnosis: the share, the main reason and, for a decode failure, the likely cause.
pub fn judge_replay(
    summary: &ReplaySummary,
    format: InputFormat,
    max_rejected_share: f64,
) -> Result<(), MostlyRejected> {
    let rejected = summary.dead_letter_total();
    if summary.records == 0 || rejected as f64 <= max_rejected_share * summary.records as f64 {
        return Ok(());
    }
    let (main_reason, main_count) = summary
        .dead_letters
        .iter()
        .max_by_key(|(_, count)| **count)
        .map_or(("unknown", 0), |(reason, count)| (reason.as_str(), *count));
    let share = |count: u64| 100.0 * count as f64 / summary.records as f64;
    let how_many = if main_count == summary.records {
        "every record".to_string()
    } else {
        format!("{:.0} % of records", share(main_count))
    };
    // Only a file that almost never decodes is likely the other format; a file with some bad
    // lines is just a file with bad lines.
    let mostly_undecodable = main_count as f64 >= 0.9 * summary.records as f64;
    let hint = match (main_reason, format) {
        ("invalid_protobuf", InputFormat::Protobuf) if mostly_undecodable => {
            format!(
                "{how_many} failed to decode as protobuf — is the file JSONL? (try --format jsonl)"
            )
        }
        ("invalid_json", InputFormat::Jsonl) if mostly_undecodable => {
            format!("{how_many} failed to decode as JSON — is the file protobuf? (try --format protobuf)")
        }
        (reason, _) => format!("{how_many} dead-lettered as {reason}"),
    };
    Err(MostlyRejected {
        diagnosis: format!(
            "{hint}; {rejected} of {} records rejected ({:.1} %, more than the allowed {:.0} %, see --max-rejected-share)",
            summary.records,
            share(rejected),
            100.0 * max_rejected_share,
        ),
    })
}

/// Parses `--max-rejected-share`: a share between 0 and 1.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is not between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(records: u64, dead_letters: &[(&str, u64)]) -> ReplaySummary {
        ReplaySummary {
            records,
            dead_letters: dead_letters
                .iter()
                .map(|(reason, count)| (reason.to_string(), *count))
                .collect(),
            ..ReplaySummary::default()
        }
    }

    #[test]
    fn jsonl_read_as_protobuf_is_diagnosed_as_the_wrong_format() {
        let error = judge_replay(
            &summary(10, &[("invalid_protobuf", 10)]),
            InputFormat::Protobuf,
            0.5,
        )
        .unwrap_err();
        assert!(
            error
                .diagnosis
                .starts_with("every record failed to decode as protobuf — is the file JSONL?"),
            "{}",
            error.diagnosis
        );
    }

    #[test]
    fn rejections_up_to_the_share_pass_and_above_it_fail() {
        let half = summary(10, &[("late", 5)]);
        assert!(judge_replay(&half, InputFormat::Jsonl, 0.5).is_ok());
        let error = judge_replay(&half, InputFormat::Jsonl, 0.4).unwrap_err();
        assert!(
            error
                .diagnosis
                .contains("50 % of records dead-lettered as late"),
            "{}",
            error.diagnosis
        );
        assert!(judge_replay(&summary(0, &[]), InputFormat::Jsonl, 0.0).is_ok());
    }

    #[test]
    fn a_file_with_some_bad_lines_is_not_called_the_other_format() {
        let error = judge_replay(
            &summary(8, &[("invalid_json", 3), ("unknown_grid", 2)]),
            InputFormat::Jsonl,
            0.5,
        )
        .unwrap_err();
        assert!(
            error
                .diagnosis
                .starts_with("38 % of records dead-lettered as invalid_json;"),
            "{}",
            error.diagnosis
        );
    }

    #[test]
    fn the_share_must_be_between_zero_and_one() {
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("half").is_err());
    }
}
