//! Placeholder until the enrich stage lands (its branch replaces this file).
use crate::span::model::{Attribute, Resource};
use std::sync::Arc;
pub struct ResourceCache;
impl ResourceCache {
    pub fn new(_host: String, _cap: usize) -> Self { Self }
    pub fn get(&mut self, pid: u32) -> Arc<Resource> { Arc::new(Resource { attributes: vec![Attribute::new("process.pid", i64::from(pid))] }) }
    pub fn forget(&mut self, _pid: u32) {}
}
pub fn host_name() -> String { "host".into() }
