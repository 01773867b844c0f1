//! InfluxQL `/query`. SKELETON (issue 6).
