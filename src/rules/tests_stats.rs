//! Tests of the statistical rules, suppressions and rule replacement.
