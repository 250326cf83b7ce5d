#!/usr/bin/env python3
"""The best detection probability any detector can reach on the issue-14 community goals.

A calculation, not a simulation: why "a x10 community wave lasting 24 h found within 24 h in
80 % of draws" and "a x30 community wave lasting 6 h found within 6 h in 80 %" cannot be met
at the false-alarm budget, whatever the rule.

Setting (that of benches/power.rs): the wave multiplies the seeded rate of the two fraud types
the rules match (FRAUD_WARNING, FRAUD_REPORTED; seeds/baseline_rates.csv) in the
median-population community (seeds/communities.csv), starting at local 08:00 (the bench's
onset). The detector knows the true baseline, the wave's multiple and its exact span, and
must raise an alarm naming the community within that span.

Bound: split a week into disjoint spans of the wave's length, for each of the 162 communities
(162 x 7 spans of 24 h, 162 x 28 of 6 h). Whatever a detector does, its false alarms a week
are at least the sum over those spans of the chance that it names the span's community within
the span on a normal stream. A detector that spends its budget evenly over communities and
times (no prior on where a wave will be) has at most alpha = budget / spans per span. Given
the rest of the stream, the span's events are a Poisson process whose intensity the wave
multiplies, so the likelihood ratio depends on the span's count alone: by Neyman-Pearson no
test of size alpha is more powerful than the (randomized) count threshold. Its power is the
bound printed.

    python3 benches/power_bound.py
"""

import csv
import math
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FRAUD_TYPES = ("FRAUD_WARNING", "FRAUD_REPORTED")
COMMUNITIES = 162
ONSET_LOCAL_HOUR = 8


def poisson_pmf(k, mean):
    return math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1))


def most_powerful_power(mean_null, mean_wave, alpha):
    """Power of the randomized count test of size alpha: reject when N > k, and with chance
    gamma when N = k."""
    tail_null = 1.0  # P0(N >= k)
    k = 0
    while True:
        tail_above = tail_null - poisson_pmf(k, mean_null)  # P0(N > k)
        if tail_above <= alpha:
            break
        tail_null = tail_above
        k += 1
    gamma = (alpha - tail_above) / poisson_pmf(k, mean_null)
    wave_above = 1.0 - sum(poisson_pmf(j, mean_wave) for j in range(k + 1))
    return k, gamma, wave_above + gamma * poisson_pmf(k, mean_wave)


def main():
    rates = {}
    with open(os.path.join(ROOT, "seeds", "baseline_rates.csv")) as handle:
        for row in csv.DictReader(handle):
            if row["event_type"] in FRAUD_TYPES:
                assert row["unit"] == "per_10k_residents_per_year"
                profile = [float(row[f"h{hour:02d}"]) for hour in range(24)]
                rates[row["event_type"]] = (float(row["rate"]), profile)
    with open(os.path.join(ROOT, "seeds", "communities.csv")) as handle:
        populations = sorted(int(row["population"]) for row in csv.DictReader(handle))
    population = populations[len(populations) // 2]

    def expected(hours):
        """Seeded fraud events of the median community from the onset over `hours`."""
        total = 0.0
        for rate, profile in rates.values():
            per_day = rate * population / 10_000 / 365
            mean_profile = sum(profile) / 24
            for offset in range(hours):
                hour = (ONSET_LOCAL_HOUR + offset) % 24
                total += per_day * profile[hour] / mean_profile / 24
        return total

    print(f"median community: {population} residents, {expected(24):.3f} fraud events a day")
    print()
    print("| goal | seeded events in the span | disjoint spans a week | false alarms a week | best power |")
    print("|---|---|---|---|---|")
    for multiple, hours in ((10, 24), (30, 6)):
        mean_null = expected(hours)
        mean_wave = multiple * mean_null
        spans = COMMUNITIES * (7 * 24 // hours)
        for budget in (1, 1.5, 2, 5):
            alpha = budget / spans
            k, gamma, power = most_powerful_power(mean_null, mean_wave, alpha)
            print(
                f"| x{multiple} for {hours} h, found within {hours} h | {mean_null:.3f} "
                f"(wave: {mean_wave:.2f}) | {spans} | {budget} | **{power:.0%}** "
                f"(alarm from {k + 1} events, at {k} with chance {gamma:.2f}) |"
            )


if __name__ == "__main__":
    main()
