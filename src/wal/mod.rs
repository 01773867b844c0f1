//! Write-ahead log. SKELETON (issue 5).
