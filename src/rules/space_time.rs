//! The prospective space-time scan statistic behind `kind = "scan"` rules
//! ([`super::scan`]): pure computation, no time, no state.
//!
//! # What it finds
//!
//! A fraud wave spread over three neighbouring communities can stay below every single
//! community's threshold while their sum is plainly above the baseline. The scan looks at
//! every *cylinder*: a zone of neighbouring communities (the base) times a recent time window
//! ending now (the height), and asks which one is the least likely under the baseline. That
//! is Kulldorff's space-time scan (SaTScan's prospective analysis, as run for disease
//! surveillance) with the base map taken from the seeds' community centroids.
//!
//! # The statistic
//!
//! Zones are built once from the centroids: for every community, itself and its nearest
//! neighbours, one zone per size up to `max_communities`, none reaching beyond `max_radius`
//! (the same set reached from two centres is one zone). A cylinder's count `c` is the sum of
//! its communities' events in the window; its expectation `e` is the sum of their baseline
//! expectations ([`super::baseline`]: seeded, then learned from strictly earlier weeks).
//!
//! The score is the Poisson log-likelihood ratio of "the cylinder runs at rate `c / e` times
//! the baseline" against "it runs at the baseline": `c ln(c / e) − (c − e)` when `c > e`,
//! else 0. This is the expectation-based form of Kulldorff's Poisson statistic (Neill et al.,
//! 2005): the expected counts come from the baseline rather than from the current total, so a
//! wave that lifts the whole city is still a cluster, where the conditional form would see
//! nothing unusual in how the total is spread.
//!
//! # The p-value
//!
//! The statistic of interest is the *maximum* score over all cylinders, so the p-value must
//! account for every zone and window tested at once: that is what controls false alarms over
//! all scales and scopes together. It is computed by Monte Carlo, as SaTScan does: replicate
//! maps are drawn under the baseline (each community and disjoint time segment Poisson with
//! its expectation; the windows are nested, so a window's count is the sum of its segments),
//! each replicate's maximum score is computed over the same cylinders, and
//! `p = (1 + #{replicate maxima ≥ observed}) / (1 + replications)`.
//!
//! Most evaluations are nowhere near significant, so the replicates stop early (Besag and
//! Clifford's sequential Monte Carlo test): once more replicates reach the observed maximum
//! than a p-value at or below `alpha` allows, the answer is "not significant" whatever the
//! rest would show. Under the baseline this stops after a handful of replicates; all of them
//! run only when the observed maximum is extreme, which is when the alert needs the p-value.
//! Replicates are drawn from a seed derived from the rule and the evaluation time, so a replay
//! of the same stream decides the same way (restarts and re-processing after a crash agree).
//!
//! Secondary clusters (a second wave elsewhere in the city) are the next-best cylinders that
//! share no community with a better one, each with its p-value against the same replicate
//! maxima — conservative, as in SaTScan.

use rand::Rng;
use rand_distr::{Distribution, Poisson};

/// Smallest expectation of a cylinder (events over its window): a zone without any history or
/// capable device cannot turn one event into an infinite score.
pub const MIN_CYLINDER_EXPECTED: f64 = 0.01;

/// Most windows of a scan (a rule with more is refused): the width of a replicate's rows.
pub const MAX_SCAN_WINDOWS: usize = 8;

/// Row width of a replicate's counts for scans of up to this many windows (the shipped rule
/// has three).
const NARROW_ROW_WIDTH: usize = 4;

/// The zones (sets of communities) a scan tests: neighbourhoods, and optionally whole
/// districts and the whole city, all in one family (one maximum, one p-value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanZones {
    /// Member community positions of each zone, nearest to the zone's centre first (the centre
    /// is the first member).
    zones: Vec<Vec<u32>>,
    /// What each zone is (parallel to `zones`).
    kinds: Vec<ZoneKind>,
    /// How each zone is counted (parallel to `zones`): a neighbourhood of k communities is an
    /// earlier zone (the same centre's k − 1 nearest, or the zone with the same set) plus one
    /// community, so every replicate counts it with one addition per window instead of a sum
    /// over its members. `None` for a zone counted member by member (a centre alone, a
    /// district, the city).
    extensions: Vec<Option<ZoneExtension>>,
}

/// A zone that is an earlier zone plus one community.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ZoneExtension {
    /// Index of the earlier zone (always below the zone's own index).
    smaller_zone: usize,
    /// The community it adds (not a member of the smaller zone).
    added_community: u32,
}

/// What a zone stands for: the scope of the alert it raises.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ZoneKind {
    /// A community and its nearest neighbours (a cluster).
    #[default]
    Neighbourhood,
    /// Every community of one district (its position in the registry's districts).
    District(u32),
    /// Every community of the city.
    City,
}

impl ScanZones {
    /// The zones of `centroids` (WGS-84 longitude, latitude per community position): each
    /// community with its k − 1 nearest neighbours for k = 1..=`max_communities`, as long as
    /// the k-th is within `max_radius_meters` of the centre. Ties in distance go to the lower
    /// position, so the zones do not depend on anything but the map.
    pub fn from_centroids(
        centroids: &[(f64, f64)],
        max_communities: usize,
        max_radius_meters: f64,
    ) -> ScanZones {
        let mut zones: Vec<Vec<u32>> = Vec::new();
        let mut extensions: Vec<Option<ZoneExtension>> = Vec::new();
        // Each zone's members, sorted, to its index: the same set reached from two centres is
        // one zone.
        let mut index_of_set: std::collections::HashMap<Vec<u32>, usize> =
            std::collections::HashMap::new();
        for (centre, centre_point) in centroids.iter().enumerate() {
            let mut by_distance: Vec<(f64, usize)> = centroids
                .iter()
                .enumerate()
                .map(|(position, point)| (distance_meters(*centre_point, *point), position))
                .collect();
            by_distance
                .sort_by(|left, right| left.0.total_cmp(&right.0).then(left.1.cmp(&right.1)));
            // The centre comes first even when another community shares its centroid.
            if let Some(index) = by_distance.iter().position(|(_, p)| *p == centre) {
                let centre_entry = by_distance.remove(index);
                by_distance.insert(0, centre_entry);
            }
            let mut members: Vec<u32> = Vec::new();
            // The zone of `members` before the latest community was added.
            let mut smaller_zone: Option<usize> = None;
            for (distance, position) in by_distance.into_iter().take(max_communities.max(1)) {
                if !members.is_empty() && distance > max_radius_meters {
                    break;
                }
                let added_community = position as u32;
                members.push(added_community);
                let mut key = members.clone();
                key.sort_unstable();
                let zone = *index_of_set.entry(key).or_insert_with(|| {
                    zones.push(members.clone());
                    extensions.push(smaller_zone.map(|smaller_zone| ZoneExtension {
                        smaller_zone,
                        added_community,
                    }));
                    zones.len() - 1
                });
                smaller_zone = Some(zone);
            }
        }
        let kinds = vec![ZoneKind::Neighbourhood; zones.len()];
        ScanZones {
            zones,
            kinds,
            extensions,
        }
    }

    /// Adds a zone of `members` standing for `kind` (a district or the city), unless a zone
    /// with the same members is already there (a district of one community is a neighbourhood).
    pub fn push_zone(&mut self, members: Vec<u32>, kind: ZoneKind) {
        if members.is_empty() {
            return;
        }
        let mut sorted = members.clone();
        sorted.sort_unstable();
        let exists = self.zones.iter().any(|zone| {
            let mut existing = zone.clone();
            existing.sort_unstable();
            existing == sorted
        });
        if !exists {
            self.zones.push(members);
            self.kinds.push(kind);
            self.extensions.push(None);
        }
    }

    /// Every zone's counts over the windows, by zone, from each community's (by community
    /// position), into `zone_counts` (reused by every replicate). An extended zone adds its
    /// one community's row to the smaller zone's, computed before it; any other zone sums its
    /// members' rows. Integer sums, so the order of addition does not matter: the counts are
    /// those of summing each zone's members. All windows at once, in rows whose width is a
    /// constant of the replicate loop (so each row's additions have a fixed count): a
    /// replicate's zones that reach `min_count` over the longest window are scored over the
    /// shorter ones too, and summed member by member there, window by window, those sums were
    /// over a quarter of the replicates' instructions (the default rules' scan on 1 M
    /// simulator events: 998 M instructions before, 847 M with these rows).
    fn count_zones_over<const WIDTH: usize>(
        &self,
        community_counts: &[[u64; WIDTH]],
        zone_counts: &mut Vec<[u64; WIDTH]>,
    ) {
        // Every row is overwritten in zone order, an extension reading its smaller zone's
        // (always earlier) row of this call.
        zone_counts.resize(self.zones.len(), [0; WIDTH]);
        for (zone, (members, extension)) in self.zones.iter().zip(&self.extensions).enumerate() {
            let row = match extension {
                Some(extension) => {
                    let mut row = zone_counts
                        .get(extension.smaller_zone)
                        .copied()
                        .unwrap_or([0; WIDTH]);
                    add_window_counts(&mut row, community_counts, extension.added_community);
                    row
                }
                None => {
                    let mut row = [0; WIDTH];
                    for member in members {
                        add_window_counts(&mut row, community_counts, *member);
                    }
                    row
                }
            };
            if let Some(zone_row) = zone_counts.get_mut(zone) {
                *zone_row = row;
            }
        }
    }

    /// The zones, each nearest-first.
    pub fn zones(&self) -> &[Vec<u32>] {
        &self.zones
    }

    /// What zone `zone` stands for (a neighbourhood when out of range).
    pub fn kind(&self, zone: usize) -> ZoneKind {
        self.kinds
            .get(zone)
            .copied()
            .unwrap_or(ZoneKind::Neighbourhood)
    }
}

/// The count of `members` together over `window`, from each community's counts over every
/// window (`[community * windows + window]`).
fn members_count(members: &[u32], community_counts: &[u64], windows: usize, window: usize) -> u64 {
    members
        .iter()
        .map(|member| community_count(community_counts, windows, *member, window))
        .sum()
}

/// One community's count over `window`, from each community's counts over every window
/// (`[community * windows + window]`); 0 outside them.
fn community_count(community_counts: &[u64], windows: usize, community: u32, window: usize) -> u64 {
    community_counts
        .get(community as usize * windows + window)
        .copied()
        .unwrap_or(0)
}

/// Adds `community`'s row of `community_counts` to `row` (nothing for a community outside them).
fn add_window_counts<const WIDTH: usize>(
    row: &mut [u64; WIDTH],
    community_counts: &[[u64; WIDTH]],
    community: u32,
) {
    let Some(community_row) = community_counts.get(community as usize) else {
        return;
    };
    for (count, community_count) in row.iter_mut().zip(community_row) {
        *count += community_count;
    }
}

/// Great-circle distance between two WGS-84 (longitude, latitude) points, in metres.
fn distance_meters(from: (f64, f64), to: (f64, f64)) -> f64 {
    use geo::{Distance, Haversine, Point};
    Haversine.distance(Point::new(from.0, from.1), Point::new(to.0, to.1))
}

/// The expectation-based Poisson log-likelihood ratio of `observed` events against
/// `expected`: `c ln(c / e) − (c − e)` above the expectation, else 0.
pub fn poisson_log_likelihood_ratio(observed: f64, expected: f64) -> f64 {
    if observed <= expected || expected <= 0.0 {
        return 0.0;
    }
    observed * (observed / expected).ln() - (observed - expected)
}

/// Whether [`poisson_log_likelihood_ratio`] of `observed` over `expected` may exceed `maximum`
/// (at least 0): `false` only when a bound shows it cannot, so a replicate's maximum skips the
/// logarithm of most cylinders (the logarithms were a quarter of the scan's replicates). For
/// x ≥ 1, ln x ≤ (x − 1)/√x, so above the expectation the ratio is at most
/// (c − e)(√c − √e)/√e: square roots instead of a logarithm, and tight (3 against 2.55 for 4
/// events over 1 expected). The margin is far above the rounding of either side (c ln(c/e) is
/// at most the bound plus c − e), so the maximum taken is bit for bit the same. A property
/// test holds the bound to the ratio. Both square roots come with their values: an
/// expectation's is computed once per evaluation and a small count's once per test, the same
/// bits as computing them here, so a replicate's bound of a cylinder costs one division.
fn score_may_exceed(
    (observed, observed_root): (f64, f64),
    (expected, expected_root): (f64, f64),
    maximum: f64,
) -> bool {
    if observed <= expected || expected <= 0.0 {
        return true;
    }
    let bound = (observed - expected) * (observed_root - expected_root) / expected_root;
    let bound_with_margin = bound + 1e-9 * (bound + observed);
    // A NaN bound is not below the maximum: the ratio is computed, as it was without the bound.
    bound_with_margin.partial_cmp(&maximum) != Some(std::cmp::Ordering::Less)
}

/// Observed and expected counts of every community over every window of one evaluation
/// (windows ordered from the shortest; each contains the shorter ones).
#[derive(Debug, Clone, PartialEq)]
pub struct ScanCounts {
    /// Number of windows.
    windows: usize,
    /// Events, community-major: `[community * windows + window]`.
    observed: Vec<u64>,
    /// Baseline expectation, laid out like `observed`.
    expected: Vec<f64>,
}

impl ScanCounts {
    /// Empty counts of `communities` over `windows` windows.
    pub fn new(communities: usize, windows: usize) -> ScanCounts {
        ScanCounts {
            windows,
            observed: vec![0; communities * windows],
            expected: vec![0.0; communities * windows],
        }
    }

    /// Sets one community's count and expectation over one window.
    pub fn set(&mut self, community: usize, window: usize, observed: u64, expected: f64) {
        let index = community * self.windows + window;
        if let (Some(observed_slot), Some(expected_slot)) =
            (self.observed.get_mut(index), self.expected.get_mut(index))
        {
            *observed_slot = observed;
            *expected_slot = if expected.is_finite() {
                expected.max(0.0)
            } else {
                0.0
            };
        }
    }

    fn observed_of(&self, community: u32, window: usize) -> u64 {
        community_count(&self.observed, self.windows, community, window)
    }

    fn expected_of(&self, community: u32, window: usize) -> f64 {
        self.expected
            .get(community as usize * self.windows + window)
            .copied()
            .unwrap_or(0.0)
    }

    /// Events and (unfloored) expectation of `members` together over `window`.
    pub fn totals_of(&self, members: &[u32], window: usize) -> (u64, f64) {
        members
            .iter()
            .fold((0, 0.0), |(observed, expected), member| {
                (
                    observed + self.observed_of(*member, window),
                    expected + self.expected_of(*member, window),
                )
            })
    }

    fn communities(&self) -> usize {
        self.observed.len() / self.windows.max(1)
    }
}

/// One cylinder: a zone over a window, with its count, expectation and score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cylinder {
    /// Index into [`ScanZones::zones`].
    pub zone: usize,
    /// Index of the window (shortest first).
    pub window: usize,
    /// Events in it.
    pub observed: u64,
    /// Its baseline expectation (at least [`MIN_CYLINDER_EXPECTED`]).
    pub expected: f64,
    /// Its log-likelihood ratio.
    pub score: f64,
}

/// One evaluation's map seen through the zones: the counts, and the expectation of every
/// cylinder, computed once and shared by the observed scores and every replicate.
#[derive(Debug)]
pub struct ScanMap<'a> {
    zones: &'a ScanZones,
    counts: &'a ScanCounts,
    /// Floored expectation of every (zone, window): `[zone * windows + window]`.
    expectations: Vec<f64>,
    /// Their square roots, for the bound every replicate puts on every cylinder's score.
    expectation_roots: Vec<f64>,
}

impl<'a> ScanMap<'a> {
    /// The map of `counts` over `zones`.
    pub fn new(zones: &'a ScanZones, counts: &'a ScanCounts) -> ScanMap<'a> {
        let expectations = cylinder_expectations(zones, counts);
        let expectation_roots = expectations
            .iter()
            .map(|expected| expected.sqrt())
            .collect();
        ScanMap {
            zones,
            counts,
            expectations,
            expectation_roots,
        }
    }

    /// Every cylinder scoring above 0 with at least `min_count` events, best first (ties:
    /// smaller zone index, then shorter window).
    pub fn scored_cylinders(&self, min_count: u64) -> Vec<Cylinder> {
        scored_cylinders(self.zones, self.counts, &self.expectations, min_count)
    }

    /// Draws up to `replications` maps under the baseline and returns their maximum scores,
    /// stopping early once more than `allowed_exceedances` of them reach `observed_max` (then
    /// no p-value of the observed maximum could be at or below the level that allowance
    /// stands for).
    pub fn null_maxima(
        &self,
        min_count: u64,
        replications: usize,
        observed_max: f64,
        allowed_exceedances: usize,
        rng: &mut impl Rng,
    ) -> NullMaxima {
        let expectations = (&self.expectations[..], &self.expectation_roots[..]);
        let windows = self.counts.windows;
        // Rows as narrow as the windows allow: a replicate adds a row or more per zone, and for
        // the shipped rule's three windows, rows of eight made the scan's evaluations 1,012 M
        // instructions on 1 M simulator events instead of 927 M with rows of four.
        let draw = if windows <= NARROW_ROW_WIDTH {
            null_maxima::<NARROW_ROW_WIDTH>
        } else if windows <= MAX_SCAN_WINDOWS {
            null_maxima::<MAX_SCAN_WINDOWS>
        } else {
            // Refused with the rule; should it get here, no replicate is drawn: the test is
            // incomplete, so nothing is significant.
            return NullMaxima {
                maxima: Vec::new(),
                observed_max,
                replications,
            };
        };
        draw(
            self.zones,
            self.counts,
            expectations,
            min_count,
            replications,
            observed_max,
            allowed_exceedances,
            rng,
        )
    }
}

/// The expectation of every (zone, window), floored: `[zone * windows + window]`.
fn cylinder_expectations(zones: &ScanZones, counts: &ScanCounts) -> Vec<f64> {
    let mut expectations = Vec::with_capacity(zones.zones.len() * counts.windows);
    for members in &zones.zones {
        for window in 0..counts.windows {
            let expected: f64 = members
                .iter()
                .map(|member| counts.expected_of(*member, window))
                .sum();
            expectations.push(expected.max(MIN_CYLINDER_EXPECTED));
        }
    }
    expectations
}

/// [`ScanMap::scored_cylinders`].
fn scored_cylinders(
    zones: &ScanZones,
    counts: &ScanCounts,
    expectations: &[f64],
    min_count: u64,
) -> Vec<Cylinder> {
    let mut cylinders = Vec::new();
    for (zone, members) in zones.zones.iter().enumerate() {
        for window in 0..counts.windows {
            let observed = members_count(members, &counts.observed, counts.windows, window);
            if observed < min_count.max(1) {
                continue;
            }
            let Some(expected) = expectations.get(zone * counts.windows + window).copied() else {
                continue;
            };
            let score = poisson_log_likelihood_ratio(observed as f64, expected);
            if score > 0.0 {
                cylinders.push(Cylinder {
                    zone,
                    window,
                    observed,
                    expected,
                    score,
                });
            }
        }
    }
    cylinders.sort_by(|left, right| {
        right
            .score
            .total_cmp(&left.score)
            .then(left.zone.cmp(&right.zone))
            .then(left.window.cmp(&right.window))
    });
    cylinders
}

/// The best cylinder and those after it that share no community with a better one kept
/// (secondary clusters), at most `limit`.
pub fn non_overlapping(zones: &ScanZones, cylinders: &[Cylinder], limit: usize) -> Vec<Cylinder> {
    let mut kept: Vec<Cylinder> = Vec::new();
    let mut taken: std::collections::HashSet<u32> = std::collections::HashSet::new();
    for cylinder in cylinders {
        if kept.len() >= limit {
            break;
        }
        let Some(members) = zones.zones.get(cylinder.zone) else {
            continue;
        };
        if members.iter().any(|member| taken.contains(member)) {
            continue;
        }
        taken.extend(members.iter().copied());
        kept.push(*cylinder);
    }
    kept
}

/// The Monte Carlo reference of one evaluation: the maximum score of each replicate drawn,
/// exact below the observed maximum. A replicate that reaches the observed maximum is an
/// exceedance whatever else it holds, so its cylinders are not scored further: its maximum is
/// only known to be at least the observed one. Every question an evaluation asks is answered
/// exactly all the same: a p-value is asked of scores up to the observed maximum (which every
/// exceedance's lower bound reaches), and the critical score of a complete run is its
/// (allowed + 1)-th largest maximum, below the at most `allowed` exceedances.
#[derive(Debug, Clone, PartialEq)]
pub struct NullMaxima {
    /// Replicate maxima, in draw order (for an exceedance, the score that made it one).
    maxima: Vec<f64>,
    /// The observed maximum the replicates were compared with.
    observed_max: f64,
    /// Replicates asked for (fewer were drawn when the test stopped early).
    replications: usize,
}

impl NullMaxima {
    /// Whether every replicate asked for was drawn (the p-values are then exact Monte Carlo
    /// p-values; otherwise the observed maximum was already known not to be significant).
    pub fn is_complete(&self) -> bool {
        self.maxima.len() == self.replications
    }

    /// Replicates drawn.
    pub fn drawn(&self) -> usize {
        self.maxima.len()
    }

    /// The `rank`-th largest replicate maximum (1 = the largest), if that many were drawn and
    /// it is below the observed maximum (an exceedance's maximum is not known exactly).
    pub fn largest(&self, rank: usize) -> Option<f64> {
        let mut sorted = self.maxima.clone();
        sorted.sort_by(|left, right| right.total_cmp(left));
        sorted
            .get(rank.checked_sub(1)?)
            .copied()
            .filter(|maximum| *maximum < self.observed_max)
    }

    /// `(1 + #{maxima ≥ score}) / (1 + drawn)`: the Monte Carlo p-value of a cylinder scoring
    /// `score` (for a secondary cluster, conservative: it is compared with the maxima over all
    /// cylinders); `None` above the observed maximum, where the exceedances' maxima would have
    /// to be known exactly.
    pub fn p_value(&self, score: f64) -> Option<f64> {
        if score > self.observed_max {
            return None;
        }
        let at_least = self
            .maxima
            .iter()
            .filter(|maximum| **maximum >= score)
            .count();
        Some((1 + at_least) as f64 / (1 + self.maxima.len()) as f64)
    }
}

/// [`ScanMap::null_maxima`], with each community's and zone's counts over the windows in rows
/// of `WIDTH` (at least the windows; the rest stay zero).
#[allow(clippy::too_many_arguments)]
fn null_maxima<const WIDTH: usize>(
    zones: &ScanZones,
    counts: &ScanCounts,
    (expectations, expectation_roots): (&[f64], &[f64]),
    min_count: u64,
    replications: usize,
    observed_max: f64,
    allowed_exceedances: usize,
    rng: &mut impl Rng,
) -> NullMaxima {
    let windows = counts.windows;
    let communities = counts.communities();
    // Disjoint time segments: segment 0 is the shortest window, segment s the part of window
    // s that is not in window s − 1. Per segment, the city total is Poisson with the summed
    // expectation and each event falls in a community with probability proportional to its
    // expectation (the splitting property): one draw per event instead of one per community.
    // A segment expecting more events than there are communities (a flood, or a hostile
    // snapshot's learned counts) is drawn per community instead, so that a replicate never
    // costs more than O(communities) draws whatever the expectation.
    let mut segment_totals = Vec::with_capacity(windows);
    let mut segment_pickers: Vec<CommunityPicker> = Vec::with_capacity(windows);
    let mut segment_per_community: Vec<Vec<Option<Poisson<f64>>>> = Vec::with_capacity(windows);
    for window in 0..windows {
        let mut cumulative = Vec::with_capacity(communities);
        let mut per_community = Vec::with_capacity(communities);
        let mut total = 0.0;
        for community in 0..communities as u32 {
            let previous = if window == 0 {
                0.0
            } else {
                counts.expected_of(community, window - 1)
            };
            let segment_expected = (counts.expected_of(community, window) - previous).max(0.0);
            total += segment_expected;
            cumulative.push(total);
            per_community.push(Poisson::new(segment_expected).ok());
        }
        segment_totals.push(total);
        segment_pickers.push(CommunityPicker::new(cumulative));
        segment_per_community.push(per_community);
    }
    let segment_poisson: Vec<Option<Poisson<f64>>> = segment_totals
        .iter()
        .map(|total| Poisson::new(*total).ok())
        .collect();

    // Each community's counts over every window, and each zone's (the windows nest: an event
    // counts in its segment's window and every longer one).
    let mut replicate_counts = vec![[0u64; WIDTH]; communities];
    let mut zone_counts = Vec::with_capacity(zones.zones.len());
    // The square roots of the counts a replicate's cylinders mostly have, computed once.
    let count_roots: Vec<f64> = (0..COUNT_ROOTS_KEPT)
        .map(|count| (count as f64).sqrt())
        .collect();
    let count_root = |count: u64| {
        usize::try_from(count)
            .ok()
            .and_then(|count| count_roots.get(count).copied())
            .unwrap_or_else(|| (count as f64).sqrt())
    };
    let mut maxima = Vec::with_capacity(replications);
    let mut exceedances = 0usize;
    for _ in 0..replications {
        replicate_counts.as_flattened_mut().fill(0);
        for window in 0..windows {
            if segment_totals.get(window).copied().unwrap_or(0.0) > communities as f64 {
                let per_community = segment_per_community
                    .get(window)
                    .map_or(&[][..], Vec::as_slice);
                for (community, poisson) in per_community.iter().enumerate() {
                    let Some(poisson) = poisson else {
                        continue;
                    };
                    let drawn = poisson.sample(rng) as u64;
                    count_in_windows_from(&mut replicate_counts, community, window, drawn);
                }
                continue;
            }
            let (Some(Some(poisson)), Some(picker), Some(total)) = (
                segment_poisson.get(window),
                segment_pickers.get(window),
                segment_totals.get(window).copied(),
            ) else {
                continue;
            };
            let events = poisson.sample(rng) as u64;
            for _ in 0..events {
                let pick = rng.random_range(0.0..total);
                let community = picker
                    .partition_point(pick)
                    .min(communities.saturating_sub(1));
                count_in_windows_from(&mut replicate_counts, community, window, 1);
            }
        }
        let mut maximum = 0.0f64;
        zones.count_zones_over(&replicate_counts, &mut zone_counts);
        let cylinders_of_a_zone = windows.max(1);
        'zones: for ((zone_window_counts, zone_expectations), zone_expectation_roots) in zone_counts
            .iter()
            .zip(expectations.chunks_exact(cylinders_of_a_zone))
            .zip(expectation_roots.chunks_exact(cylinders_of_a_zone))
        {
            // Longest window first: windows nest, so a zone's count only shrinks towards the
            // shortest, and once it is below `min_count` no shorter window can score. Most
            // zones of a quiet replicate end at their longest window (the maximum taken is the
            // same in any order).
            for ((observed, expected), expected_root) in zone_window_counts
                .get(..windows)
                .unwrap_or_default()
                .iter()
                .zip(zone_expectations)
                .zip(zone_expectation_roots)
                .rev()
            {
                let (observed, expected, expected_root) = (*observed, *expected, *expected_root);
                if observed < min_count.max(1) {
                    break;
                }
                let observed_value = observed as f64;
                if score_may_exceed(
                    (observed_value, count_root(observed)),
                    (expected, expected_root),
                    maximum,
                ) {
                    let score = poisson_log_likelihood_ratio(observed_value, expected);
                    maximum = maximum.max(score);
                    // An exceedance already: the rest of its cylinders cannot change that
                    // (see `NullMaxima`), and quiet evaluations are mostly exceedances.
                    if maximum >= observed_max {
                        break 'zones;
                    }
                }
            }
        }
        maxima.push(maximum);
        if maximum >= observed_max {
            exceedances += 1;
            if exceedances > allowed_exceedances {
                break;
            }
        }
    }
    NullMaxima {
        maxima,
        observed_max,
        replications,
    }
}

/// Counts `events` of segment `segment` (the part of window `segment` not in a shorter one)
/// for `community`: in that window and every longer one.
fn count_in_windows_from<const WIDTH: usize>(
    replicate_counts: &mut [[u64; WIDTH]],
    community: usize,
    segment: usize,
    events: u64,
) {
    let Some(row) = replicate_counts.get_mut(community) else {
        return;
    };
    for count in row.iter_mut().skip(segment) {
        *count += events;
    }
}

/// Counts whose square roots the replicates look up rather than compute: a replicate's
/// cylinders hold a few events each.
const COUNT_ROOTS_KEPT: usize = 64;

/// Where a uniform draw in `[0, total)` falls among communities laid end to end by their
/// expectation: the number of running totals at or below it, as `partition_point` on the
/// running totals gives, found in a few steps instead of a binary search over them all (each
/// replicate of a wave draws every expected event this way). The draw's bucket of the total
/// narrows the search to the few totals inside that bucket, and a walk to the boundary makes
/// it exact whatever the rounding, so the replicates draw the same maps as the binary search
/// over all totals did.
struct CommunityPicker {
    /// Running totals of the communities' expectations (non-decreasing).
    cumulative: Vec<f64>,
    /// Per bucket (an equal part of the total), the partition point of its lower edge.
    first_candidate_by_bucket: Vec<usize>,
    /// Buckets per unit of expectation.
    buckets_per_unit: f64,
}

/// Buckets per community: enough that a draw's bucket holds about one boundary.
const PICKER_BUCKETS_PER_COMMUNITY: usize = 4;

impl CommunityPicker {
    fn new(cumulative: Vec<f64>) -> CommunityPicker {
        let total = cumulative.last().copied().unwrap_or(0.0);
        let buckets = (cumulative.len() * PICKER_BUCKETS_PER_COMMUNITY).max(1);
        let buckets_per_unit = if total > 0.0 && total.is_finite() {
            buckets as f64 / total
        } else {
            0.0
        };
        let first_candidate_by_bucket = (0..buckets)
            .map(|bucket| {
                let lower_edge = bucket as f64 / buckets_per_unit.max(f64::MIN_POSITIVE);
                cumulative.partition_point(|running| *running <= lower_edge)
            })
            .collect();
        CommunityPicker {
            cumulative,
            first_candidate_by_bucket,
            buckets_per_unit,
        }
    }

    /// The number of running totals at or below `pick`.
    fn partition_point(&self, pick: f64) -> usize {
        // `as` saturates: a negative or NaN product is bucket 0, a large one the last.
        let bucket = ((pick * self.buckets_per_unit) as usize)
            .min(self.first_candidate_by_bucket.len().saturating_sub(1));
        // Without rounding, the answer lies between the partition points of the bucket's two
        // edges: a binary search over the few running totals between them, then a walk that
        // corrects for a draw rounded into a neighbouring bucket.
        let lowest = self
            .first_candidate_by_bucket
            .get(bucket)
            .copied()
            .unwrap_or(0)
            .min(self.cumulative.len());
        let highest = self
            .first_candidate_by_bucket
            .get(bucket + 1)
            .copied()
            .unwrap_or(self.cumulative.len())
            .clamp(lowest, self.cumulative.len());
        let mut index = lowest
            + self.cumulative.get(lowest..highest).map_or(0, |between| {
                between.partition_point(|running| *running <= pick)
            });
        while index > 0
            && self
                .cumulative
                .get(index - 1)
                .is_some_and(|running| *running > pick)
        {
            index -= 1;
        }
        while self
            .cumulative
            .get(index)
            .is_some_and(|running| *running <= pick)
        {
            index += 1;
        }
        index
    }
}

/// Replicate maxima that may reach the observed maximum while its p-value can still be at or
/// below `alpha` with `replications` replicates: `⌊alpha · (1 + replications)⌋ − 1`, or
/// `None` when even none would give a p-value above `alpha` (too few replications).
pub fn allowed_exceedances(alpha: f64, replications: usize) -> Option<usize> {
    let budget = (alpha * (1 + replications) as f64 + 1e-9).floor();
    if budget < 1.0 {
        return None;
    }
    Some(budget as usize - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    proptest::proptest! {
        #[test]
        fn a_ratio_the_bound_rules_out_never_exceeds_the_maximum(
            observed in proptest::prop_oneof![1_u64..20, 1_u64..100_000],
            expected in proptest::prop_oneof![1e-6_f64..1.0, 0.0_f64..30.0, 0.0_f64..1e5],
            maximum in proptest::prop_oneof![0.0_f64..5.0, 0.0_f64..100.0, 0.0_f64..1e6],
        ) {
            let observed = observed as f64;
            let ratio = poisson_log_likelihood_ratio(observed, expected);
            let may_exceed = |maximum| {
                score_may_exceed((observed, observed.sqrt()), (expected, expected.sqrt()), maximum)
            };
            if !may_exceed(maximum) {
                proptest::prop_assert!(ratio <= maximum, "{} > {}", ratio, maximum);
            }
            // Just above the ratio, the bound must still rule out no more than it may.
            let just_above = ratio * (1.0 + 1e-12);
            if !may_exceed(just_above) {
                proptest::prop_assert!(ratio <= just_above);
            }
        }
    }

    proptest::proptest! {
        /// Replicates that stop scoring once they reach the observed maximum answer every
        /// p-value up to it, and every rank below the exceedances, as the replicates scored in
        /// full do (the same draws: the observed maximum does not change what is drawn).
        #[test]
        fn exceedances_scored_only_until_they_exceed_answer_as_if_scored_in_full(
            cells in proptest::collection::vec((0_u64..8, 0.2_f64..4.0), 6),
            observed_max in 0.0_f64..6.0,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
            let mut counts = ScanCounts::new(3, 2);
            for (index, (observed, expected)) in cells.iter().enumerate() {
                // Windows nest: the longer window holds the shorter one's events.
                let (community, window) = (index / 2, index % 2);
                let shorter = if window == 1 { cells[index - 1] } else { (0, 0.0) };
                counts.set(community, window, observed + shorter.0, expected + shorter.1);
            }
            let map = ScanMap::new(&zones, &counts);
            let replications = 200;
            let null_of = |observed_max: f64| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                map.null_maxima(1, replications, observed_max, replications, &mut rng)
            };
            let in_full = null_of(f64::INFINITY);
            let stopped = null_of(observed_max);
            proptest::prop_assert!(in_full.is_complete() && stopped.is_complete());
            let exceedances = in_full.maxima.iter().filter(|maximum| **maximum >= observed_max).count();
            let mut scores: Vec<f64> = in_full.maxima.clone();
            scores.push(observed_max);
            for score in scores.into_iter().filter(|score| *score <= observed_max) {
                proptest::prop_assert_eq!(stopped.p_value(score), in_full.p_value(score));
            }
            for rank in exceedances + 1..=replications {
                proptest::prop_assert_eq!(stopped.largest(rank), in_full.largest(rank));
            }
            proptest::prop_assert_eq!(stopped.p_value(observed_max + 1.0), None);
        }
    }

    proptest::proptest! {
        /// Counting a zone as a smaller zone plus one community gives what summing its
        /// members gives, for every zone and window, on maps where centres share neighbours
        /// (so that many zones are reached from two centres and extend another centre's zone).
        #[test]
        fn zones_counted_by_extension_count_what_their_members_sum_to(
            centroids in proptest::collection::vec((0.0_f64..0.05, 0.0_f64..0.05), 1..40),
            max_communities in 1_usize..7,
            max_radius_meters in 500.0_f64..6_000.0,
            windows in 1_usize..=MAX_SCAN_WINDOWS,
            seed in proptest::num::u64::ANY,
        ) {
            let mut zones = ScanZones::from_centroids(&centroids, max_communities, max_radius_meters);
            zones.push_zone((0..centroids.len() as u32).collect(), ZoneKind::City);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let community_counts: Vec<[u64; MAX_SCAN_WINDOWS]> = (0..centroids.len())
                .map(|_| {
                    let mut row = [0; MAX_SCAN_WINDOWS];
                    for count in row.iter_mut().take(windows) {
                        *count = rng.random_range(0..50);
                    }
                    row
                })
                .collect();
            let mut zone_counts = Vec::new();
            zones.count_zones_over(&community_counts, &mut zone_counts);
            let summed: Vec<[u64; MAX_SCAN_WINDOWS]> = zones
                .zones()
                .iter()
                .map(|members| {
                    let mut row = [0; MAX_SCAN_WINDOWS];
                    for (window, count) in row.iter_mut().enumerate() {
                        *count = members
                            .iter()
                            .map(|member| community_counts[*member as usize][window])
                            .sum::<u64>();
                    }
                    row
                })
                .collect();
            proptest::prop_assert_eq!(zone_counts, summed);
        }
    }

    proptest::proptest! {
        /// The picker answers what a binary search over the running totals answers, for draws
        /// anywhere in (and beyond) the total, on expectations with zeros, ties and one
        /// community holding almost everything.
        #[test]
        fn the_community_picker_agrees_with_a_binary_search(
            expectations in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(0.0_f64),
                    0.0_f64..2.0,
                    proptest::strategy::Just(1e6_f64),
                ],
                0..200,
            ),
            picks in proptest::collection::vec(-1.0_f64..1.1, 1..64),
        ) {
            let mut total = 0.0;
            let cumulative: Vec<f64> = expectations
                .iter()
                .map(|expected| {
                    total += expected;
                    total
                })
                .collect();
            let picker = CommunityPicker::new(cumulative.clone());
            let mut edges: Vec<f64> = cumulative.clone();
            edges.extend(picks.iter().map(|share| share * total));
            for pick in edges {
                proptest::prop_assert_eq!(
                    picker.partition_point(pick),
                    cumulative.partition_point(|running| *running <= pick),
                    "pick {}",
                    pick
                );
            }
        }
    }

    /// Three communities on a line, 1 km apart (at the equator, 1 km ≈ 0.008993°).
    fn three_in_a_line() -> Vec<(f64, f64)> {
        vec![(0.0, 0.0), (0.008993, 0.0), (0.017986, 0.0)]
    }

    #[test]
    fn zones_are_each_community_with_its_nearest_neighbours_within_the_radius() {
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        let mut sets: Vec<Vec<u32>> = zones
            .zones()
            .iter()
            .map(|members| {
                let mut sorted = members.clone();
                sorted.sort_unstable();
                sorted
            })
            .collect();
        sets.sort();
        assert_eq!(
            sets,
            vec![vec![0], vec![0, 1], vec![1], vec![1, 2], vec![2]]
        );
        // A radius below the spacing leaves single communities only.
        let singles = ScanZones::from_centroids(&three_in_a_line(), 3, 500.0);
        assert_eq!(singles.zones().len(), 3);
        // Centres come first.
        assert!(zones.zones().iter().any(|members| members == &vec![2, 1]));
        // Every zone of two extends its centre's zone of one, which a replicate counts first.
        for (members, extension) in zones.zones().iter().zip(&zones.extensions) {
            let expected = match members.as_slice() {
                [centre, added] => Some((vec![*centre], *added)),
                _ => None,
            };
            let found = extension.map(|extension| {
                (
                    zones.zones()[extension.smaller_zone].clone(),
                    extension.added_community,
                )
            });
            assert_eq!(found, expected, "{members:?}");
        }
    }

    #[test]
    fn the_score_is_zero_at_or_below_the_expectation_and_grows_with_the_excess() {
        assert_eq!(poisson_log_likelihood_ratio(1.0, 2.0), 0.0);
        assert_eq!(poisson_log_likelihood_ratio(2.0, 2.0), 0.0);
        let modest = poisson_log_likelihood_ratio(4.0, 2.0);
        let strong = poisson_log_likelihood_ratio(8.0, 2.0);
        assert!((modest - (4.0 * 2.0f64.ln() - 2.0)).abs() < 1e-12);
        assert!(strong > modest && modest > 0.0);
    }

    #[test]
    fn secondary_clusters_share_no_community_with_a_better_one() {
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        let mut counts = ScanCounts::new(3, 1);
        counts.set(0, 0, 6, 0.5);
        counts.set(1, 0, 1, 0.5);
        counts.set(2, 0, 4, 0.5);
        let cylinders = ScanMap::new(&zones, &counts).scored_cylinders(1);
        let kept = non_overlapping(&zones, &cylinders, 5);
        let member_sets: Vec<Vec<u32>> = kept
            .iter()
            .map(|cylinder| zones.zones()[cylinder.zone].clone())
            .collect();
        assert_eq!(member_sets[0], vec![0], "{member_sets:?}");
        assert!(member_sets.contains(&vec![2]), "{member_sets:?}");
        for (index, first) in member_sets.iter().enumerate() {
            for second in &member_sets[index + 1..] {
                assert!(first.iter().all(|member| !second.contains(member)));
            }
        }
    }

    #[test]
    fn too_few_replications_for_alpha_are_refused_and_the_allowance_follows_alpha() {
        assert_eq!(allowed_exceedances(0.001, 998), None);
        assert_eq!(allowed_exceedances(0.001, 999), Some(0));
        assert_eq!(allowed_exceedances(0.01, 999), Some(9));
    }

    #[test]
    fn monte_carlo_stops_early_when_the_observed_maximum_is_ordinary() {
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        let mut counts = ScanCounts::new(3, 1);
        for community in 0..3 {
            counts.set(community, 0, 1, 1.0);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let null = ScanMap::new(&zones, &counts).null_maxima(1, 999, 0.0, 0, &mut rng);
        assert!(!null.is_complete());
        assert!(null.drawn() <= 2, "drawn {}", null.drawn());
    }

    #[test]
    fn a_flood_of_expected_events_costs_draws_per_community_not_per_event() {
        // A billion expected events per community (a hostile snapshot could claim that): a
        // replicate must still finish at once, and the counts must sit near the expectation.
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        let mut counts = ScanCounts::new(3, 1);
        for community in 0..3 {
            counts.set(community, 0, 1_000_000_000, 1e9);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let null = ScanMap::new(&zones, &counts).null_maxima(1, 20, f64::INFINITY, 20, &mut rng);
        assert!(null.is_complete());
        // Under the baseline the maximum score of a Poisson(1e9) count stays small.
        assert!(null.largest(1).unwrap_or(f64::INFINITY) < 50.0, "{null:?}");
    }

    #[test]
    fn narrow_and_wide_replicate_rows_draw_the_same_maxima() {
        // Three nested windows, some communities above the baseline, so that replicates score
        // zones over every window: the row width is a layout, never a result.
        let zones = ScanZones::from_centroids(&three_in_a_line(), 3, 5_000.0);
        let mut counts = ScanCounts::new(3, 3);
        for community in 0..3 {
            for window in 0..3 {
                let expected = 2.0 * (window + 1) as f64;
                counts.set(community, window, 3 * (window as u64 + 1), expected);
            }
        }
        let map = ScanMap::new(&zones, &counts);
        let draw = |null_maxima: fn(_, _, _, _, _, _, _, &mut ChaCha8Rng) -> NullMaxima| {
            null_maxima(
                &zones,
                &counts,
                (&map.expectations[..], &map.expectation_roots[..]),
                1,
                200,
                f64::INFINITY,
                200,
                &mut ChaCha8Rng::seed_from_u64(7),
            )
        };
        let narrow = draw(null_maxima::<NARROW_ROW_WIDTH>);
        let wide = draw(null_maxima::<MAX_SCAN_WINDOWS>);
        assert!(narrow.is_complete());
        assert!(narrow.maxima.iter().any(|maximum| *maximum > 0.0));
        assert_eq!(narrow, wide);
    }

    #[test]
    fn a_scan_with_more_windows_than_allowed_draws_nothing_and_is_not_significant() {
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        let counts = ScanCounts::new(3, MAX_SCAN_WINDOWS + 1);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let null = ScanMap::new(&zones, &counts).null_maxima(1, 99, 1.0, 5, &mut rng);
        assert!(!null.is_complete());
        assert_eq!(null.drawn(), 0);
    }

    /// The SciPy/brute-force reference (`tests/fixtures/stats/gen_fixtures.py`): exact
    /// p-values of the maximum score on three communities, two nested windows.
    #[test]
    fn monte_carlo_p_values_agree_with_the_exact_enumeration() {
        #[derive(serde::Deserialize)]
        struct Fixtures {
            scan: Vec<ScanCase>,
        }
        #[derive(serde::Deserialize)]
        struct ScanCase {
            /// Per community: expectation over each window (shortest first).
            expected: Vec<Vec<f64>>,
            /// Per community: events over each window.
            observed: Vec<Vec<u64>>,
            min_count: u64,
            max_score: f64,
            p_value: f64,
        }
        let fixtures: Fixtures =
            serde_json::from_str(include_str!("../../tests/fixtures/stats/poisson.json"))
                .expect("fixture json");
        assert!(fixtures.scan.len() >= 3);
        let zones = ScanZones::from_centroids(&three_in_a_line(), 2, 1_500.0);
        for case in &fixtures.scan {
            let windows = case.expected[0].len();
            let mut counts = ScanCounts::new(3, windows);
            for community in 0..3 {
                for window in 0..windows {
                    counts.set(
                        community,
                        window,
                        case.observed[community][window],
                        case.expected[community][window],
                    );
                }
            }
            let map = ScanMap::new(&zones, &counts);
            let cylinders = map.scored_cylinders(case.min_count);
            let max_score = cylinders.first().map_or(0.0, |cylinder| cylinder.score);
            assert!(
                (max_score - case.max_score).abs() < 1e-9,
                "max score {max_score} vs {}",
                case.max_score
            );
            let replications = 20_000;
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let null = map.null_maxima(
                case.min_count,
                replications,
                max_score,
                replications,
                &mut rng,
            );
            assert!(null.is_complete());
            let p_value = null
                .p_value(max_score)
                .expect("a p-value at the observed maximum");
            // Five standard errors of a Monte Carlo proportion.
            let standard_error = (case.p_value * (1.0 - case.p_value) / replications as f64).sqrt();
            assert!(
                (p_value - case.p_value).abs() < 5.0 * standard_error + 1.0 / replications as f64,
                "monte carlo p {p_value} vs exact {}",
                case.p_value
            );
        }
    }
}
