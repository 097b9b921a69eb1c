//! The runtime-agnostic concurrent shell (placeholder while the core settles).
