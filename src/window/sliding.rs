//! Sliding views derived from panes.
