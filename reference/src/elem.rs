use std::fmt::{Debug, Display};

use num_traits::{Float, FromPrimitive};

/// A floating-point element type the kernels compute in (`f32` or `f64`).
pub trait Elem:
    Float
    + num_traits::NumAssign
    + FromPrimitive
    + ndarray::LinalgScalar
    + ndarray::ScalarOperand
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// The matching [`Precision`].
    const PRECISION: Precision;
    /// Converts from `f64`, rounding to nearest.
    fn of(x: f64) -> Self;
    /// Widens (or copies) to `f64`, exactly.
    fn to_f64_exact(self) -> f64;
}

impl Elem for f32 {
    const PRECISION: Precision = Precision::F32;
    fn of(x: f64) -> Self {
        x as f32
    }
    fn to_f64_exact(self) -> f64 {
        f64::from(self)
    }
}

impl Elem for f64 {
    const PRECISION: Precision = Precision::F64;
    fn of(x: f64) -> Self {
        x
    }
    fn to_f64_exact(self) -> f64 {
        self
    }
}

/// The arithmetic precision a kernel runs in. Inputs and outputs cross the op traits as `f64`
/// (exact for `f32` data); the computation itself runs in this precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    /// IEEE single precision.
    F32,
    /// IEEE double precision.
    F64,
}

impl Precision {
    /// `"f32"` or `"f64"`, as written in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        }
    }
    /// Both precisions, f64 first.
    pub const ALL: [Precision; 2] = [Precision::F64, Precision::F32];
}

impl Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f64" => Ok(Precision::F64),
            other => Err(format!(
                "unknown precision `{other}`: expected `f32` or `f64`"
            )),
        }
    }
}

/// The element type a hyperbolic kernel reads: float64 or float32 (computed in that precision),
/// or bfloat16 inputs (rounded to bf16, geometry in f32; design hyperbolic.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    /// f64 inputs, f64 arithmetic.
    F64,
    /// f32 inputs, f32 arithmetic.
    F32,
    /// bf16 inputs, f32 arithmetic (outputs rounded to bf16 where the op says so).
    Bf16,
}

impl Dtype {
    /// `"f64"`, `"f32"` or `"bf16"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F64 => "f64",
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
    /// The arithmetic precision: f64 for `F64`, f32 otherwise.
    pub fn compute(self) -> Precision {
        match self {
            Dtype::F64 => Precision::F64,
            Dtype::F32 | Dtype::Bf16 => Precision::F32,
        }
    }
    /// Rounds an f64 input value to this dtype (returned widened, exactly).
    pub fn round(self, x: f64) -> f64 {
        match self {
            Dtype::F64 => x,
            Dtype::F32 => f64::from(x as f32),
            Dtype::Bf16 => f64::from(crate::bf16_from_f64(x).to_f32()),
        }
    }
    /// Every dtype, f64 first.
    pub const ALL: [Dtype; 3] = [Dtype::F64, Dtype::F32, Dtype::Bf16];
}

impl From<Precision> for Dtype {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F64 => Dtype::F64,
            Precision::F32 => Dtype::F32,
        }
    }
}

impl Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f64" => Ok(Dtype::F64),
            "f32" => Ok(Dtype::F32),
            "bf16" => Ok(Dtype::Bf16),
            other => Err(format!(
                "unknown dtype `{other}`: expected `f64`, `f32` or `bf16`"
            )),
        }
    }
}
