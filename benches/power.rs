//! Wave-detection power of the fraud rules (issue 14 item 6): how often, and how fast, the
//! default `fraud_wave_spike` and `fraud_wave_cusum` rules find a fraud wave, beside a
//! reference detector that knows the true baseline. A measurement, never a test.
//!
//! Each draw is a normal city (all 162 communities, both fraud types the rules match, at the
//! seeded rates of `seeds/baseline_rates.csv`: `rules::simulation::seeded_stream`) for two
//! days of warm-up, then a wave of ×2, ×3, ×5, ×10 or ×30 the seeded rate lasting 6 h, 24 h or
//! 3 days in one median-population community, in three adjacent communities (the median one
//! and its two nearest by centroid) or in a whole district (the median one by population),
//! then a day after the wave. The rules run as the pipeline runs them
//! (`rules::simulation::run_rules`). A wave counts as found by a rule when one of its FIRING
//! alerts names an affected community and starts between the onset and the end of the wave;
//! the delay is from the onset.
//!
//! The reference is an exact one-sided Poisson test on the true (seeded) expectation, at every
//! hour boundary, over trailing windows of 1 h, 6 h and 24 h, for every community and every
//! district: the best a window detector at those scales and scopes can do. Its per-test alpha
//! is one over the number of tests a week city-wide (Bonferroni), so that it raises at most
//! about one false alarm a week, the statistical rules' budget. The background-only row counts
//! each detector's alarms on the draws' normal stream.
//!
//! ```sh
//! cargo bench --bench power                 # -- --draws 20 (the default)
//! benches/power.sh                          # the same, table in target/power/results.md
//! cargo bench --bench power -- --rules fraud_wave_district_spike_24h --scope district
//!                                           # one rule, district waves only (tuning)
//! cargo bench --bench power -- --normal-weeks 6 --draws 10
//!                                           # false alarms once the learned baseline rules
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gridwatch::grid::{CellIndex, CommunityIndex, GridRegistry};
use gridwatch::proto::{AlertStatus, EventType};
use gridwatch::rules::simulation::{
    embedded_rules_where, run_rules, seeded_stream, sort_by_time, wave_stream, SimulatedEvent,
};
use gridwatch::rules::statistics::poisson_upper_tail;
use gridwatch::rules::Baseline;

const HOUR: i64 = 3_600_000;
/// Monday 2026-03-02 00:00 UTC (an hour boundary).
const START: i64 = 1_772_409_600_000;
const WARM_UP_HOURS: i64 = 48;
const AFTER_HOURS: i64 = 24;
const FRAUD_TYPES: [EventType; 2] = [EventType::FraudWarning, EventType::FraudReported];
const MULTIPLES: [f64; 5] = [2.0, 3.0, 5.0, 10.0, 30.0];
const DURATIONS_HOURS: [i64; 3] = [6, 24, 72];
const REFERENCE_WINDOWS_HOURS: [i64; 3] = [1, 6, 24];
/// The rules measured unless `--rules` names others.
const DEFAULT_RULES: [&str; 5] = [
    "fraud_wave_spike",
    "fraud_wave_cusum",
    "fraud_wave_district_spike_6h",
    "fraud_wave_district_spike_24h",
    "fraud_wave_cluster",
];

/// Where a wave is.
struct Scope {
    name: &'static str,
    communities: Vec<CommunityIndex>,
}

/// Expected fraud events per (community, local hour of day) at the seeded rates.
fn expected_by_community(registry: &GridRegistry, baseline: &Baseline) -> Vec<[f64; 24]> {
    registry
        .communities()
        .iter()
        .map(|community| {
            let mut hourly = [0.0; 24];
            for (local_hour, slot) in hourly.iter_mut().enumerate() {
                *slot = community
                    .cells
                    .iter()
                    .flat_map(|cell| FRAUD_TYPES.iter().map(move |kind| (*cell, *kind)))
                    .map(|(cell, kind)| {
                        baseline.seeded_hourly_rate(registry, cell, kind, local_hour)
                    })
                    .sum();
            }
            hourly
        })
        .collect()
}

/// Local hour of day (Asia/Shanghai, UTC+8) of the epoch hour starting at `millis`.
fn local_hour(millis: i64) -> usize {
    ((millis.div_euclid(HOUR) + 8).rem_euclid(24)) as usize
}

fn scopes(registry: &GridRegistry) -> Vec<Scope> {
    let communities = registry.communities();
    let mut by_population: Vec<usize> = (0..communities.len()).collect();
    by_population.sort_by_key(|index| communities[*index].population);
    let median = by_population[by_population.len() / 2];
    let (median_x, median_y) = communities[median].centroid;
    let mut by_distance: Vec<usize> = (0..communities.len()).collect();
    by_distance.sort_by(|left, right| {
        let distance = |index: &usize| {
            let (x, y) = communities[*index].centroid;
            (x - median_x).powi(2) + (y - median_y).powi(2)
        };
        distance(left).total_cmp(&distance(right))
    });
    let mut district_population: BTreeMap<&str, u64> = BTreeMap::new();
    for community in communities {
        *district_population
            .entry(community.district_code.as_str())
            .or_default() += u64::from(community.population);
    }
    let mut districts: Vec<(&str, u64)> = district_population.into_iter().collect();
    districts.sort_by_key(|(_, population)| *population);
    let median_district = districts[districts.len() / 2].0;
    let index = |position: usize| CommunityIndex(position as u32);
    vec![
        Scope {
            name: "one community",
            communities: vec![index(median)],
        },
        Scope {
            name: "three adjacent communities",
            communities: by_distance
                .iter()
                .take(3)
                .map(|position| index(*position))
                .collect(),
        },
        Scope {
            name: "a district",
            communities: (0..communities.len())
                .filter(|position| communities[*position].district_code == median_district)
                .map(index)
                .collect(),
        },
    ]
}

/// First hour (from the onset) at which the reference test rejects for an affected unit.
struct Reference<'a> {
    registry: &'a GridRegistry,
    expected_by_community: &'a [[f64; 24]],
    alpha: f64,
}

impl Reference<'_> {
    /// Events per (community, hour since START).
    fn hourly_counts(&self, stream: &[SimulatedEvent], hours: i64) -> Vec<Vec<u64>> {
        let mut counts = vec![vec![0_u64; hours as usize]; self.registry.communities().len()];
        for (occurred_at, cell, _) in stream {
            let hour = ((occurred_at - START) / HOUR) as usize;
            let community = self.registry.cells()[cell.0 as usize].community.0 as usize;
            if let Some(slot) = counts[community].get_mut(hour) {
                *slot += 1;
            }
        }
        counts
    }

    /// Whether some unit among `units` (each a set of communities) is significant in a window
    /// ending at hour `end_hour` (exclusive).
    fn rejects(&self, counts: &[Vec<u64>], units: &[Vec<usize>], end_hour: i64) -> bool {
        for unit in units {
            for window in REFERENCE_WINDOWS_HOURS {
                let first_hour = end_hour - window;
                if first_hour < 0 {
                    continue;
                }
                let mut observed = 0;
                let mut expected = 0.0;
                for community in unit {
                    for hour in first_hour..end_hour {
                        observed += counts[*community][hour as usize];
                        expected +=
                            self.expected_by_community[*community][local_hour(START + hour * HOUR)];
                    }
                }
                if observed > 0 && poisson_upper_tail(expected, observed) < self.alpha {
                    return true;
                }
            }
        }
        false
    }
}

/// Outcome of one detector over the draws of one scenario.
#[derive(Default)]
struct Tally {
    found: usize,
    delays_hours: Vec<f64>,
}

impl Tally {
    fn cell(&self, draws: usize) -> String {
        let share = 100.0 * self.found as f64 / draws as f64;
        if self.delays_hours.is_empty() {
            return format!("{share:.0} %");
        }
        let mut delays = self.delays_hours.clone();
        delays.sort_by(f64::total_cmp);
        let median = delays[delays.len() / 2];
        format!("{share:.0} % ({median:.1} h)")
    }
}

fn main() {
    let mut draws = 20_usize;
    let mut rule_names: Vec<String> = DEFAULT_RULES.iter().map(|rule| rule.to_string()).collect();
    let mut only_scope: Option<String> = None;
    let mut normal_weeks: Option<i64> = None;
    let mut arguments = std::env::args().skip(1);
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--draws" => {
                draws = arguments
                    .next()
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(draws)
                    .max(1);
            }
            // Tuning one rule: measure only it (and the reference), on one kind of wave.
            "--rules" => {
                if let Some(names) = arguments.next() {
                    rule_names = names.split(',').map(str::to_string).collect();
                }
            }
            "--scope" => only_scope = arguments.next(),
            "--normal-weeks" => {
                normal_weeks = arguments.next().and_then(|value| value.parse().ok());
            }
            _ => {}
        }
    }
    let rule_names: Vec<&str> = rule_names.iter().map(String::as_str).collect();
    // Columns after the rules': "any of them" (what the operators see: the first alert of
    // whichever rule), then the reference detector.
    let any_rule_column = rule_names.len();
    let reference_column = any_rule_column + 1;
    let registry = GridRegistry::embedded();
    let baseline = Baseline::embedded();
    let expected = expected_by_community(&registry, &baseline);
    let districts: BTreeMap<&str, Vec<usize>> = registry.communities().iter().enumerate().fold(
        BTreeMap::new(),
        |mut districts, (index, community)| {
            districts
                .entry(community.district_code.as_str())
                .or_insert_with(Vec::new)
                .push(index);
            districts
        },
    );
    let tests_per_week =
        (registry.communities().len() + districts.len()) * REFERENCE_WINDOWS_HOURS.len() * 168;
    let reference = Reference {
        registry: &registry,
        expected_by_community: &expected,
        alpha: 1.0 / tests_per_week as f64,
    };
    let rules = embedded_rules_where(&|name, _| rule_names.contains(&name)).expect("fraud rules");
    if let Some(weeks) = normal_weeks {
        normal_weeks_table(
            &registry,
            &baseline,
            &rules,
            &rule_names,
            draws,
            weeks.max(1),
        );
        return;
    }
    let scopes = scopes(&registry);
    let max_duration = DURATIONS_HOURS.iter().max().copied().unwrap_or(0);
    let total_hours = WARM_UP_HOURS + max_duration + AFTER_HOURS;
    let onset = START + WARM_UP_HOURS * HOUR;
    let mut results: BTreeMap<(usize, usize, usize), Vec<Tally>> = BTreeMap::new();
    let mut background_alarms = vec![0_usize; reference_column + 1];
    let started = std::time::Instant::now();
    for draw in 0..draws {
        let seed = 1_000 + draw as u64;
        let background =
            seeded_stream(&registry, &baseline, &FRAUD_TYPES, START, total_hours, seed);
        // Background only: alarms of each rule, and the reference's, after the warm-up.
        let alerts = run_rules(
            &registry,
            rules.clone(),
            &background,
            START,
            START + total_hours * HOUR,
        );
        for (rule_number, rule) in rule_names.iter().enumerate() {
            // Occurrences, not their updates: one alert id each.
            let occurrences = alerts
                .iter()
                .filter(|alert| {
                    alert.rule == *rule
                        && alert.status == AlertStatus::Firing as i32
                        && alert
                            .starts_at
                            .as_ref()
                            .is_some_and(|starts| starts.seconds * 1000 >= onset)
                })
                .map(|alert| alert.alert_id.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            background_alarms[rule_number] += occurrences;
            background_alarms[any_rule_column] += occurrences;
        }
        let background_counts = reference.hourly_counts(&background, total_hours);
        let all_units: Vec<Vec<usize>> = (0..registry.communities().len())
            .map(|community| vec![community])
            .chain(districts.values().cloned())
            .collect();
        background_alarms[reference_column] += (WARM_UP_HOURS + 1..=total_hours)
            .filter(|end_hour| reference.rejects(&background_counts, &all_units, *end_hour))
            .count();
        for (scope_number, scope) in scopes.iter().enumerate() {
            if only_scope
                .as_deref()
                .is_some_and(|wanted| !scope.name.contains(wanted))
            {
                continue;
            }
            let cells: Vec<CellIndex> = scope
                .communities
                .iter()
                .flat_map(|community| registry.communities()[community.0 as usize].cells.clone())
                .collect();
            let affected_ids: Vec<&str> = scope
                .communities
                .iter()
                .map(|community| registry.communities()[community.0 as usize].id.as_str())
                .collect();
            // A district-scope alert names only its district.
            let affected_districts: Vec<&str> = scope
                .communities
                .iter()
                .map(|community| {
                    registry.communities()[community.0 as usize]
                        .district_code
                        .as_str()
                })
                .collect();
            let affected: Vec<usize> = scope
                .communities
                .iter()
                .map(|community| community.0 as usize)
                .collect();
            let mut units: Vec<Vec<usize>> =
                affected.iter().map(|community| vec![*community]).collect();
            units.extend(
                districts
                    .values()
                    .filter(|members| members.iter().any(|member| affected.contains(member)))
                    .cloned(),
            );
            for (multiple_number, multiple) in MULTIPLES.iter().enumerate() {
                for (duration_number, duration) in DURATIONS_HOURS.iter().enumerate() {
                    let wave_seed = seed * 1_000
                        + (scope_number * 100 + multiple_number * 10 + duration_number) as u64;
                    let wave = wave_stream(
                        &registry,
                        &baseline,
                        &cells,
                        &FRAUD_TYPES,
                        multiple - 1.0,
                        onset,
                        *duration,
                        wave_seed,
                    );
                    let mut stream = background.clone();
                    stream.extend(wave.iter().copied());
                    sort_by_time(&mut stream);
                    let end = onset + duration * HOUR;
                    let alerts = run_rules(&registry, rules.clone(), &stream, START, end + HOUR);
                    let tallies = results
                        .entry((scope_number, multiple_number, duration_number))
                        .or_insert_with(|| {
                            (0..=reference_column).map(|_| Tally::default()).collect()
                        });
                    let mut first_of_any_rule: Option<i64> = None;
                    for (rule_number, rule) in rule_names.iter().enumerate() {
                        let first = alerts
                            .iter()
                            .filter(|alert| {
                                alert.rule == *rule
                                    && alert.status == AlertStatus::Firing as i32
                                    && (affected_ids.contains(&alert.community_id.as_str())
                                        || alert
                                            .cluster_community_ids
                                            .iter()
                                            .any(|member| affected_ids.contains(&member.as_str()))
                                        || (alert.community_id.is_empty()
                                            && affected_districts
                                                .contains(&alert.district_id.as_str())))
                            })
                            .filter_map(|alert| alert.starts_at.as_ref())
                            .map(|starts| {
                                starts.seconds * 1000 + i64::from(starts.nanos) / 1_000_000
                            })
                            .filter(|starts| (onset..=end).contains(starts))
                            .min();
                        if let Some(starts) = first {
                            tallies[rule_number].found += 1;
                            tallies[rule_number]
                                .delays_hours
                                .push((starts - onset) as f64 / HOUR as f64);
                            first_of_any_rule =
                                Some(first_of_any_rule.map_or(starts, |any: i64| any.min(starts)));
                        }
                    }
                    if let Some(starts) = first_of_any_rule {
                        tallies[any_rule_column].found += 1;
                        tallies[any_rule_column]
                            .delays_hours
                            .push((starts - onset) as f64 / HOUR as f64);
                    }
                    let counts = reference.hourly_counts(&stream, total_hours);
                    let first_hour = (WARM_UP_HOURS + 1..=WARM_UP_HOURS + duration)
                        .find(|end_hour| reference.rejects(&counts, &units, *end_hour));
                    if let Some(end_hour) = first_hour {
                        tallies[reference_column].found += 1;
                        tallies[reference_column]
                            .delays_hours
                            .push((end_hour - WARM_UP_HOURS) as f64);
                    }
                }
            }
        }
        eprintln!(
            "draw {} of {draws} done after {:.1} s",
            draw + 1,
            started.elapsed().as_secs_f64()
        );
    }

    let mut table = String::new();
    let mut header = String::from("| wave | multiple | duration |");
    for rule in &rule_names {
        let _ = write!(header, " {rule} |");
    }
    header.push_str(" any of these rules |");
    header.push_str(" reference (exact Poisson, true baseline) |");
    let _ = writeln!(table, "{header}");
    let _ = writeln!(
        table,
        "|---|---|---|{}",
        "---|".repeat(reference_column + 1)
    );
    for ((scope_number, multiple_number, duration_number), tallies) in &results {
        let cells: Vec<String> = tallies.iter().map(|tally| tally.cell(draws)).collect();
        let _ = writeln!(
            table,
            "| {} | ×{} | {} h | {} |",
            scopes[*scope_number].name,
            MULTIPLES[*multiple_number],
            DURATIONS_HOURS[*duration_number],
            cells.join(" | "),
        );
    }
    let weeks = draws as f64 * (total_hours - WARM_UP_HOURS) as f64 / 168.0;
    let background: Vec<String> = background_alarms
        .iter()
        .enumerate()
        .map(|(column, alarms)| {
            let unit = if column == reference_column {
                "hours with an alarm/week"
            } else {
                "alarms/week"
            };
            format!("{:.2} {unit}", *alarms as f64 / weeks)
        })
        .collect();
    let _ = writeln!(
        table,
        "| none (background only) | — | — | {} |",
        background.join(" | ")
    );
    let _ = writeln!(
        table,
        "\nShare of {draws} draws in which the wave was found between its onset and its end (median delay from the onset). \"Any of these rules\": the first alert of whichever rule (its background row sums their alarms). Reference: per-test alpha {:.2e} (1 / {tests_per_week} tests a week: {} communities and {} districts × windows of 1, 6, 24 h × 168 hourly checks). Scopes: {}.",
        reference.alpha,
        registry.communities().len(),
        districts.len(),
        scopes
            .iter()
            .map(|scope| format!("{}: {} communities", scope.name, scope.communities.len()))
            .collect::<Vec<_>>()
            .join(", "),
    );
    print!("{table}");
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/power");
    if std::fs::create_dir_all(&directory).is_ok() {
        let _ = std::fs::write(directory.join("results.md"), &table);
    }
}

/// False alarms on long normal streams (`--normal-weeks W`): the waves' draws last six days,
/// within the first week, where every expectation is still the seeded one; from the second
/// week on the learned baseline takes over, and its noise is part of the false-alarm rate.
/// Prints the alarms a week of each rule in week 1 and in the weeks after, over `draws`
/// streams of `weeks` weeks.
fn normal_weeks_table(
    registry: &GridRegistry,
    baseline: &Baseline,
    rules: &gridwatch::rules::RuleSet,
    rule_names: &[&str],
    draws: usize,
    weeks: i64,
) {
    let week = 168 * HOUR;
    let mut first_week = vec![0_usize; rule_names.len()];
    let mut later_weeks = vec![0_usize; rule_names.len()];
    let started = std::time::Instant::now();
    for draw in 0..draws {
        let seed = 5_000 + draw as u64;
        let stream = seeded_stream(registry, baseline, &FRAUD_TYPES, START, weeks * 168, seed);
        let alerts = run_rules(
            registry,
            rules.clone(),
            &stream,
            START,
            START + weeks * week,
        );
        for (rule_number, rule) in rule_names.iter().enumerate() {
            let occurrences: BTreeMap<&str, i64> = alerts
                .iter()
                .filter(|alert| alert.rule == *rule && alert.status == AlertStatus::Firing as i32)
                .filter_map(|alert| {
                    let starts = alert.starts_at.as_ref()?;
                    Some((alert.alert_id.as_str(), starts.seconds * 1000))
                })
                .collect();
            for starts in occurrences.values() {
                if *starts < START + week {
                    first_week[rule_number] += 1;
                } else {
                    later_weeks[rule_number] += 1;
                }
            }
        }
        eprintln!(
            "normal draw {} of {draws} done after {:.1} s",
            draw + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| rule | alarms/week in week 1 | alarms/week in weeks 2–{weeks} |"
    );
    let _ = writeln!(table, "|---|---|---|");
    for (rule_number, rule) in rule_names.iter().enumerate() {
        let later = if weeks > 1 {
            format!(
                "{:.2}",
                later_weeks[rule_number] as f64 / (draws as f64 * (weeks - 1) as f64)
            )
        } else {
            "—".to_string()
        };
        let _ = writeln!(
            table,
            "| {rule} | {:.2} | {later} |",
            first_week[rule_number] as f64 / draws as f64
        );
    }
    let _ = writeln!(
        table,
        "\n{draws} normal streams of {weeks} weeks at the seeded rates."
    );
    print!("{table}");
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/power");
    if std::fs::create_dir_all(&directory).is_ok() {
        let _ = std::fs::write(directory.join("normal-weeks.md"), &table);
    }
}
