//! Coordinate normalization: GCJ-02 and BD-09 to WGS-84.
