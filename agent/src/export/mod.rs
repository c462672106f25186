//! Placeholder until the export stage lands (its branch replaces this file).
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// OTLP endpoint.
    pub endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExportError(String);

impl ExportConfig {
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ExportError> {
        if let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            self.endpoint = Some(e);
        }
        Ok(())
    }
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
