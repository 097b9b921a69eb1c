//! size
pub struct SizeQuery { pub rate: f64, pub query_ms: f64, pub connect_ms: f64, pub p99_wait_ms: f64, pub seed: u64, pub max_size: usize }
pub struct SizeResult { pub recommended: Option<usize> }
impl SizeResult { pub fn text(&self) -> String { String::new() } }
pub fn search(_q: &SizeQuery) -> SizeResult { SizeResult { recommended: None } }
