//! The statistics core: sketches, reference profiles, drift metrics, windows and
//! scoring. Pure and I/O-free, shared by `score`, `run` and the benchmarks.

pub mod categorical;
pub mod distribution;
pub mod estimate;
pub mod grid;
pub mod isotonic;
pub mod label_join;
pub mod metrics;
pub mod model_profile;
pub mod null;
pub mod numeric;
pub mod partial;
pub mod performance;
pub mod profile;
pub mod reference;
pub mod report;
pub mod resample;
pub mod sampling;
pub mod score;
pub mod sequential;
pub mod settings;
pub mod sketch;
pub mod verdict;
pub mod window;

pub use profile::{FeatureSpec, Profile, ProfileBuilder, ProfileError};
pub use reference::{OverrideError, Reference};
pub use report::{Report, Status, WindowInfo};
pub use score::score_window;
pub use settings::{DriftSettings, FeatureKind, FeatureOverride, Metric, Multiplicity, Rule};
pub use sketch::{ValueSink, WindowSketch};
