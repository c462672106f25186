//! Head sampling with the OpenTelemetry SDK's semantics (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`; the SDK specification's built-in samplers).
//!
//! The agent decides once per span it makes, when the request starts, and records the decision
//! in the span's trace flags, so everything that derives context from the span (children on the
//! same node, stitched server spans, linked consumers) inherits it. `TraceIdRatioBased` decides
//! from the trace id alone, so every agent (and every SDK using the W3C random trace-id bits)
//! agrees on a trace: the ratio is a threshold on the trace id's last 56 bits, the bits W3C
//! Trace Context level 2 calls random.

/// The built-in samplers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Sample this fraction of traces, 0.0..=1.0.
    TraceIdRatio(f64),
    /// Follow the parent's sampled flag; decide roots with the inner sampler.
    ParentBased(Root),
}

/// The root samplers a `ParentBased` one can delegate to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Root {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

impl Default for Sampler {
    /// The SDK's default: `parentbased_always_on`.
    fn default() -> Self {
        Sampler::ParentBased(Root::AlwaysOn)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SamplerError {
    #[error(
        "unknown sampler {0:?}: expected always_on, always_off, traceidratio, \
         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
    )]
    Unknown(String),
    #[error("sampler argument {0:?}: expected a ratio from 0.0 to 1.0")]
    BadRatio(String),
}

impl Sampler {
    /// From the `OTEL_TRACES_SAMPLER` name and its `OTEL_TRACES_SAMPLER_ARG` (a ratio for the
    /// `traceidratio` samplers, default 1.0; ignored by the others, as the SDK does).
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, SamplerError> {
        let ratio = || -> Result<f64, SamplerError> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(a) => a
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| SamplerError::BadRatio(a.to_owned())),
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBased(Root::AlwaysOn),
            "parentbased_always_off" => Sampler::ParentBased(Root::AlwaysOff),
            "parentbased_traceidratio" => Sampler::ParentBased(Root::TraceIdRatio(ratio()?)),
            other => return Err(SamplerError::Unknown(other.to_owned())),
        })
    }

    /// Whether a span of `trace_id` is sampled; `parent_sampled` is its parent's sampled flag
    /// (None for a root).
    pub fn sampled(&self, parent_sampled: Option<bool>, trace_id: &[u8; 16]) -> bool {
        match (self, parent_sampled) {
            (Sampler::AlwaysOn, _) => true,
            (Sampler::AlwaysOff, _) => false,
            (Sampler::TraceIdRatio(r), _) => ratio_sampled(*r, trace_id),
            (Sampler::ParentBased(_), Some(p)) => p,
            (Sampler::ParentBased(Root::AlwaysOn), None) => true,
            (Sampler::ParentBased(Root::AlwaysOff), None) => false,
            (Sampler::ParentBased(Root::TraceIdRatio(r)), None) => ratio_sampled(*r, trace_id),
        }
    }
}

/// The range of a trace id's random bits.
const RANGE: u64 = 1 << 56;

/// The threshold a trace id's last 56 bits must fall below for `ratio` of them to pass.
fn threshold(ratio: f64) -> u64 {
    // ratio 1.0 gives RANGE: every value is below it.
    (ratio * RANGE as f64) as u64
}

/// Sampled when the trace id's last 56 bits fall below `ratio` of their range.
fn ratio_sampled(ratio: f64, trace_id: &[u8; 16]) -> bool {
    let mut last = [0u8; 8];
    last[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(last) < threshold(ratio)
}

impl Sampler {
    /// Whether a span with a parent follows the parent's sampled flag (`parentbased_*`).
    pub fn parent_based(&self) -> bool {
        matches!(self, Sampler::ParentBased(_))
    }

    /// For the kernel, which starts root traces itself when it injects a traceparent: a root
    /// is sampled when its trace id's last 56 bits are below this (`1 << 56`: always, 0:
    /// never), the same decision [`Sampler::sampled`] makes for a root of that trace id.
    pub fn root_threshold(&self) -> u64 {
        match self {
            Sampler::AlwaysOn | Sampler::ParentBased(Root::AlwaysOn) => RANGE,
            Sampler::AlwaysOff | Sampler::ParentBased(Root::AlwaysOff) => 0,
            Sampler::TraceIdRatio(r) | Sampler::ParentBased(Root::TraceIdRatio(r)) => threshold(*r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_threshold_decides_as_the_sampler_does() {
        for s in [
            Sampler::AlwaysOn,
            Sampler::AlwaysOff,
            Sampler::TraceIdRatio(0.3),
            Sampler::ParentBased(Root::TraceIdRatio(0.7)),
            Sampler::ParentBased(Root::AlwaysOff),
            Sampler::default(),
        ] {
            for last in [
                0u64,
                1,
                0x4c_cccc_cccc_cccc,
                0x80_0000_0000_0000,
                0xff_ffff_ffff_ffff,
            ] {
                let t = id(last);
                let mut random = [0u8; 8];
                random[1..].copy_from_slice(&t[9..]);
                let kernel = u64::from_be_bytes(random) < s.root_threshold();
                assert_eq!(kernel, s.sampled(None, &t), "{s:?} {last:#x}");
            }
        }
    }

    fn id(last: u64) -> [u8; 16] {
        let mut t = [0xab; 16];
        t[8..].copy_from_slice(&last.to_be_bytes());
        t
    }

    #[test]
    fn names_and_arguments_as_the_sdk_reads_them() {
        assert_eq!(Sampler::parse("always_on", None), Ok(Sampler::AlwaysOn));
        assert_eq!(
            Sampler::parse("always_off", Some("x")),
            Ok(Sampler::AlwaysOff)
        );
        assert_eq!(
            Sampler::parse("traceidratio", Some("0.25")),
            Ok(Sampler::TraceIdRatio(0.25))
        );
        assert_eq!(
            Sampler::parse("traceidratio", None),
            Ok(Sampler::TraceIdRatio(1.0))
        );
        assert_eq!(
            Sampler::parse("parentbased_traceidratio", Some(" 0 ")),
            Ok(Sampler::ParentBased(Root::TraceIdRatio(0.0)))
        );
        assert_eq!(
            Sampler::parse("parentbased_always_on", None),
            Ok(Sampler::default())
        );
        assert!(matches!(
            Sampler::parse("jaeger_remote", None),
            Err(SamplerError::Unknown(_))
        ));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(
                matches!(
                    Sampler::parse("traceidratio", Some(bad)),
                    Err(SamplerError::BadRatio(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn parent_based_follows_the_parent_and_decides_roots() {
        let t = id(0);
        for root in [Root::AlwaysOn, Root::AlwaysOff, Root::TraceIdRatio(0.5)] {
            let s = Sampler::ParentBased(root);
            assert!(s.sampled(Some(true), &t));
            assert!(!s.sampled(Some(false), &t));
        }
        assert!(Sampler::ParentBased(Root::AlwaysOn).sampled(None, &t));
        assert!(!Sampler::ParentBased(Root::AlwaysOff).sampled(None, &t));
        // The non-parent-based ones ignore the parent.
        assert!(Sampler::AlwaysOn.sampled(Some(false), &t));
        assert!(!Sampler::AlwaysOff.sampled(Some(true), &t));
    }

    #[test]
    fn ratio_is_a_threshold_on_the_random_bits_and_agrees_per_trace() {
        let s = Sampler::TraceIdRatio(0.25);
        // The top byte of the last eight is not among the 56 random bits.
        assert!(s.sampled(None, &id(0xff00_0000_0000_0000)));
        assert!(s.sampled(None, &id((1 << 54) - 1)));
        assert!(!s.sampled(None, &id(1 << 54)));
        assert!(!Sampler::TraceIdRatio(0.0).sampled(None, &id(0)));
        assert!(Sampler::TraceIdRatio(1.0).sampled(None, &id((1 << 56) - 1)));
        // Over many random ids, close to the ratio.
        let n = 20_000;
        let kept = (0..n)
            .filter(|_| {
                let t: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
                s.sampled(None, &t)
            })
            .count();
        let frac = kept as f64 / n as f64;
        assert!((0.22..0.28).contains(&frac), "{frac}");
    }
}
