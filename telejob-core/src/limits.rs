//! Resource limits of a run: memory, CPU, processes, workspace disk space and network, each with
//! an operator default and maximum ([`LimitPolicy`]).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A number of bytes. JSON and config files take a number of bytes or a string such as `"2GiB"`,
/// `"512 MiB"` or `"10GB"` (`KiB`/`MiB`/`GiB` are powers of 1024, `kB`/`MB`/`GB` of 1000);
/// it is written back in the largest binary unit that divides it exactly (else in bytes): exact, so it reads back the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` gibibytes.
    pub const fn gib(n: u64) -> Self {
        Self(n << 30)
    }

    /// `n` mebibytes.
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }

    /// Parses `"2GiB"`, `"512 MiB"`, `"1.5GB"` or a plain number of bytes.
    ///
    /// # Errors
    ///
    /// A message saying how to write a size.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<u64>() {
            return Ok(Self(n));
        }
        let not_a_size = || format!("{s:?} is not a size: write e.g. 2GiB, 512MiB or 10GB");
        let too_large =
            || format!("{s:?} is larger than 16 EiB, the largest size; write a size such as 2GiB");
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(too_large());
        }
        let b = t.parse::<bytesize::ByteSize>().map_err(|_| not_a_size())?;
        // bytesize saturates: a size past u64 would read as the largest one ("no limit").
        let digits = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(digits);
        let number: f64 = number.parse().map_err(|_| not_a_size())?;
        let per_unit = format!("1{unit}")
            .parse::<bytesize::ByteSize>()
            .map_err(|_| not_a_size())?
            .as_u64();
        if number * per_unit as f64 >= u64::MAX as f64 {
            return Err(too_large());
        }
        Ok(Self(b.as_u64()))
    }
}

impl Bytes {
    /// The largest binary unit dividing the value exactly, with the count in it.
    fn exact(self) -> Option<(u64, &'static str)> {
        [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")]
            .into_iter()
            .find(|(shift, _)| self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift))
            .map(|(shift, unit)| (self.0 >> shift, unit))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((n, unit)) = self.exact().filter(|(n, _)| *n < 10_000) {
            return write!(f, "{n} {unit}");
        }
        if self.0 >= 1 << 30 {
            return write!(f, "{:.1} GiB", self.0 as f64 / f64::from(1u32 << 30));
        }
        if self.0 >= 1 << 20 {
            return write!(f, "{:.1} MiB", self.0 as f64 / f64::from(1u32 << 20));
        }
        write!(f, "{} bytes", self.0)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.exact() {
            Some((n, unit)) => s.serialize_str(&format!("{n}{unit}")),
            None => s.serialize_str(&self.0.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Self(n)),
            Raw::S(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// CPUs, in thousandths (1500 = one and a half CPUs). JSON takes a number (`1.5`) or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(pub u32);

impl Cpus {
    /// Parses `"1.5"`.
    ///
    /// # Errors
    ///
    /// A message saying how to write it.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        s.trim()
            .parse::<f64>()
            .ok()
            .and_then(Self::from_f64)
            .ok_or_else(|| format!("{s:?} is not a number of CPUs: write e.g. 0.5, 1 or 2"))
    }

    fn from_f64(v: f64) -> Option<Self> {
        (v.is_finite() && v > 0.0 && v <= 4096.0).then(|| Self((v * 1000.0).round() as u32))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1000;
        match self.0 % 1000 {
            0 => write!(f, "{whole}"),
            frac => write!(f, "{whole}.{}", format!("{frac:03}").trim_end_matches('0')),
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(v) => Self::from_f64(v).ok_or_else(|| {
                serde::de::Error::custom(format!("{v} is not a number of CPUs: use e.g. 0.5 to 64"))
            }),
            Raw::S(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// Whether a run may use the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// The host's network.
    On,
    /// A network namespace with loopback only.
    Off,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            o => Err(format!("{o:?} is not a network setting: use on or off")),
        }
    }
}

/// A run's resource limits. In a job, an absent limit takes the operator's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// Memory (RAM; swap is not granted on top), e.g. `"2GiB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// CPU time as a number of CPUs (a cgroup quota), e.g. `1.5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpus>,
    /// Processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
    /// Space the run's workspace (code, output, home, temporary files) may take, e.g. `"10GiB"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Bytes>,
    /// `on` or `off` (loopback only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

impl ResourceLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Each limit of `self`, else the one of `fallback`.
    pub fn or(&self, fallback: &Self) -> Self {
        Self {
            memory: self.memory.or(fallback.memory),
            cpu: self.cpu.or(fallback.cpu),
            processes: self.processes.or(fallback.processes),
            disk: self.disk.or(fallback.disk),
            network: self.network.or(fallback.network),
        }
    }

    /// Checks each value's own range (not the operator's maximum).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidJob`] for each field out of range, named `limits.<field>`.
    pub fn validate(&self) -> std::result::Result<(), Vec<Error>> {
        let mut errors = Vec::new();
        if let Some(m) = self.memory
            && m < Bytes::mib(16)
        {
            errors.push(Error::invalid(
                "limits.memory",
                format!("{m} is too little to start bash: use at least 16MiB"),
            ));
        }
        if let Some(c) = self.cpu
            && c.0 < 10
        {
            errors.push(Error::invalid(
                "limits.cpu",
                format!("{c} CPUs is too little: use at least 0.01"),
            ));
        }
        if let Some(p) = self.processes
            && p < 4
        {
            errors.push(Error::invalid(
                "limits.processes",
                format!("{p} is too few for a shell script: use at least 4"),
            ));
        }
        if let Some(d) = self.disk
            && d < Bytes::mib(1)
        {
            errors.push(Error::invalid(
                "limits.disk",
                format!("{d} cannot hold the code: use at least 1MiB"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// One line for people: "memory 2 GiB, 1.5 CPUs, 256 processes, disk 10 GiB, network off".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(format!("memory {m}"));
        }
        if let Some(c) = self.cpu {
            parts.push(format!("{c} CPUs"));
        }
        if let Some(p) = self.processes {
            parts.push(format!("{p} processes"));
        }
        if let Some(d) = self.disk {
            parts.push(format!("disk {d}"));
        }
        if let Some(n) = self.network {
            parts.push(format!("network {n}"));
        }
        if parts.is_empty() {
            "no limits".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Which limits a compute backend enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LimitSupport {
    /// `limits.memory`.
    pub memory: bool,
    /// `limits.cpu`.
    pub cpu: bool,
    /// `limits.processes`.
    pub processes: bool,
    /// `limits.disk`.
    pub disk: bool,
    /// `limits.network = off`.
    pub network: bool,
}

impl LimitSupport {
    /// Every limit.
    pub const ALL: Self = Self {
        memory: true,
        cpu: true,
        processes: true,
        disk: true,
        network: true,
    };

    /// The names (`limits.memory`, …) of the limits `l` sets that are not enforced.
    pub fn unenforced(&self, l: &ResourceLimits) -> Vec<&'static str> {
        let mut out = Vec::new();
        if l.memory.is_some() && !self.memory {
            out.push("limits.memory");
        }
        if l.cpu.is_some() && !self.cpu {
            out.push("limits.cpu");
        }
        if l.processes.is_some() && !self.processes {
            out.push("limits.processes");
        }
        if l.disk.is_some() && !self.disk {
            out.push("limits.disk");
        }
        if l.network == Some(Network::Off) && !self.network {
            out.push("limits.network");
        }
        out
    }

    /// `l` without the limits that are not enforced.
    pub fn keep_enforced(&self, l: &ResourceLimits) -> ResourceLimits {
        ResourceLimits {
            memory: l.memory.filter(|_| self.memory),
            cpu: l.cpu.filter(|_| self.cpu),
            processes: l.processes.filter(|_| self.processes),
            disk: l.disk.filter(|_| self.disk),
            network: l.network.filter(|n| *n == Network::On || self.network),
        }
    }
}

/// The operator's limits: a default for jobs that set none, and a maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitPolicy {
    /// Applied where a job sets no limit.
    #[serde(default = "LimitPolicy::builtin_defaults")]
    pub defaults: ResourceLimits,
    /// The most a job may ask for; `network = "off"` here means jobs may not turn it on.
    #[serde(default)]
    pub max: ResourceLimits,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self {
            defaults: Self::builtin_defaults(),
            max: ResourceLimits::default(),
        }
    }
}

impl LimitPolicy {
    /// The defaults when the operator sets none: 4 GiB of memory, 4096 processes, 20 GiB of
    /// workspace, the network on; CPU unlimited. No maximum.
    pub fn builtin_defaults() -> ResourceLimits {
        ResourceLimits {
            memory: Some(Bytes::gib(4)),
            cpu: None,
            processes: Some(4096),
            disk: Some(Bytes::gib(20)),
            network: Some(Network::On),
        }
    }

    /// The limits a run of a job with `job` limits gets.
    pub fn effective(&self, job: &ResourceLimits) -> ResourceLimits {
        job.or(&self.defaults)
    }

    /// Checks `job` against the maximum.
    ///
    /// # Errors
    ///
    /// One [`Error::InvalidJob`] per limit over the maximum, named `limits.<field>`.
    pub fn check(&self, job: &ResourceLimits) -> std::result::Result<(), Vec<Error>> {
        let mut errors = Vec::new();
        let over = |field: &str, asked: String, max: String| {
            Error::invalid(
                field,
                format!("{asked} is over this server's maximum of {max}; ask for less"),
            )
        };
        if let (Some(a), Some(m)) = (job.memory, self.max.memory)
            && a > m
        {
            errors.push(over("limits.memory", a.to_string(), m.to_string()));
        }
        if let (Some(a), Some(m)) = (job.cpu, self.max.cpu)
            && a > m
        {
            errors.push(over("limits.cpu", format!("{a} CPUs"), format!("{m} CPUs")));
        }
        if let (Some(a), Some(m)) = (job.processes, self.max.processes)
            && a > m
        {
            errors.push(over("limits.processes", a.to_string(), m.to_string()));
        }
        if let (Some(a), Some(m)) = (job.disk, self.max.disk)
            && a > m
        {
            errors.push(over("limits.disk", a.to_string(), m.to_string()));
        }
        if job.network == Some(Network::On) && self.max.network == Some(Network::Off) {
            errors.push(Error::invalid(
                "limits.network",
                "this server runs jobs without network: set network to off",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Checks the policy itself: defaults within the maximum and each value in range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        for (which, l) in [("limits", &self.defaults), ("limits.max", &self.max)] {
            if let Err(errs) = l.validate() {
                return Err(Error::config(which, errs[0].to_string()));
            }
        }
        if let Err(errs) = self.check(&self.defaults) {
            return Err(Error::config(
                "limits",
                format!("a default is over the maximum: {}", errs[0]),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print_round() {
        assert_eq!(Bytes::parse("2GiB").expect("must work"), Bytes::gib(2));
        assert_eq!(Bytes::parse("512 MiB").expect("must work"), Bytes::mib(512));
        assert_eq!(
            Bytes::parse("10GB").expect("must work"),
            Bytes(10_000_000_000)
        );
        assert_eq!(Bytes::parse("4096").expect("must work"), Bytes(4096));
        assert!(
            Bytes::parse("lots")
                .expect_err("must be refused")
                .contains("2GiB")
        );
        // Past u64: refused, not saturated to "no limit".
        for huge in [
            "99999999999999999999GiB",
            "16EiB",
            "99999999999999999999",
            "17179869184 GiB",
        ] {
            let e = Bytes::parse(huge).expect_err(huge);
            assert!(e.contains("larger than 16 EiB"), "{huge}: {e}");
        }
        assert_eq!(
            Bytes::parse("15EiB").expect("fits"),
            Bytes(15 << 60),
            "the largest units still parse"
        );
        assert_eq!(Bytes::parse("1.5 GiB").expect("must work"), Bytes(3 << 29));
        assert_eq!(Bytes::gib(2).to_string(), "2 GiB");
        assert_eq!(Bytes(1536 << 20).to_string(), "1536 MiB");
        assert_eq!(Bytes(10_000_000_000).to_string(), "9.3 GiB");
        let odd = serde_json::to_string(&Bytes(10_000_000_000)).expect("must work");
        assert_eq!(odd, "\"9765625KiB\"");
        assert_eq!(
            serde_json::from_str::<Bytes>(&odd).expect("must work"),
            Bytes(10_000_000_000)
        );
        let json = serde_json::to_string(&Bytes::gib(2)).expect("must work");
        assert_eq!(json, "\"2GiB\"");
        assert_eq!(
            serde_json::from_str::<Bytes>(&json).expect("must work"),
            Bytes::gib(2)
        );
        assert_eq!(
            serde_json::from_str::<Bytes>("1024").expect("must work"),
            Bytes(1024)
        );
    }

    #[test]
    fn cpus_parse_and_print() {
        assert_eq!(Cpus::parse("1.5").expect("must work"), Cpus(1500));
        assert_eq!(Cpus(1500).to_string(), "1.5");
        assert_eq!(Cpus(2000).to_string(), "2");
        assert_eq!(Cpus(250).to_string(), "0.25");
        assert!(Cpus::parse("-1").is_err() && Cpus::parse("NaN").is_err());
        assert_eq!(
            serde_json::from_str::<Cpus>("0.5").expect("must work"),
            Cpus(500)
        );
        assert_eq!(serde_json::to_string(&Cpus(500)).expect("must work"), "0.5");
    }

    #[test]
    fn limits_reject_unknown_fields_and_too_small_values() {
        let e = serde_json::from_str::<ResourceLimits>(r#"{"ram": "1GiB"}"#)
            .expect_err("must be refused");
        assert!(e.to_string().contains("ram"), "{e}");
        let l: ResourceLimits =
            serde_json::from_str(r#"{"memory": "1MiB", "processes": 1, "network": "off"}"#)
                .expect("must work");
        let errs = l.validate().expect_err("must be refused");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("limits.memory"), "{text:?}");
        assert!(text[1].contains("limits.processes"), "{text:?}");
    }

    #[test]
    fn the_policy_fills_defaults_and_refuses_over_the_maximum() {
        let p = LimitPolicy {
            defaults: ResourceLimits {
                memory: Some(Bytes::gib(1)),
                ..ResourceLimits::default()
            },
            max: ResourceLimits {
                memory: Some(Bytes::gib(2)),
                network: Some(Network::Off),
                ..ResourceLimits::default()
            },
        };
        let job = ResourceLimits {
            processes: Some(64),
            ..ResourceLimits::default()
        };
        let eff = p.effective(&job);
        assert_eq!((eff.memory, eff.processes), (Some(Bytes::gib(1)), Some(64)));
        let greedy = ResourceLimits {
            memory: Some(Bytes::gib(3)),
            network: Some(Network::On),
            ..ResourceLimits::default()
        };
        let errs: Vec<String> = p
            .check(&greedy)
            .expect_err("must be refused")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs[0].contains("limits.memory") && errs[0].contains("2 GiB"),
            "{errs:?}"
        );
        assert!(errs[1].contains("limits.network"), "{errs:?}");
        assert!(p.validate().is_ok());
        let bad = LimitPolicy {
            defaults: greedy,
            ..p
        };
        assert!(
            bad.validate()
                .expect_err("must be refused")
                .to_string()
                .contains("limits")
        );
    }

    #[test]
    fn unenforced_limits_are_named() {
        let s = LimitSupport {
            disk: true,
            ..LimitSupport::default()
        };
        let l = LimitPolicy::builtin_defaults();
        assert_eq!(s.unenforced(&l), vec!["limits.memory", "limits.processes"]);
        let kept = s.keep_enforced(&l);
        assert_eq!((kept.memory, kept.disk), (None, Some(Bytes::gib(20))));
        assert_eq!(kept.network, Some(Network::On));
    }
}
