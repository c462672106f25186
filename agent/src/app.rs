//! Stub
pub fn run(_cfg: crate::config::Config) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
