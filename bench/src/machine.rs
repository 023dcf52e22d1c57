//! What the numbers were measured on, and per-process CPU and memory from /proc.
use std::process::Command;

/// `nproc`, RAM and CPU model, as recorded next to every figure.
pub fn describe() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = field_kib(&meminfo, "MemTotal:").unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("unknown")
        .to_string();
    format!(
        "nproc={cpus}, RAM={:.1} GiB, CPU={model}, date={}",
        mem_kib as f64 / 1024.0 / 1024.0,
        jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// CPU seconds (user + system) a live process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Resident set size now (VmRSS) in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&status, "VmRSS:").map(|kib| kib as f64 / 1024.0)
}

/// Peak resident set size (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field_kib(&status, "VmHWM:").map(|kib| kib as f64 / 1024.0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds of the processes sharing the machine during one phase, so the report says
/// where the time went (the operator, the partner simulator, the API server, etcd, this
/// benchmark) and how busy the cores were.
pub struct CpuMeter {
    started: std::time::Instant,
    procs: Vec<(&'static str, u32, f64)>,
}

impl CpuMeter {
    /// Starts counting for each `(name, pid)` that is alive now.
    pub fn start(procs: &[(&'static str, Option<u32>)]) -> CpuMeter {
        CpuMeter {
            started: std::time::Instant::now(),
            procs: procs
                .iter()
                .filter_map(|(name, pid)| {
                    let pid = (*pid)?;
                    Some((*name, pid, cpu_seconds(pid)?))
                })
                .collect(),
        }
    }

    /// One line: each process's CPU seconds since `start`, the total and the share of the
    /// machine's cores it used over the phase's wall time.
    pub fn report(&self, phase: &str) -> String {
        let wall = self.started.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let mut total = 0.0;
        let parts: Vec<String> = self
            .procs
            .iter()
            .filter_map(|(name, pid, at_start)| {
                let used = cpu_seconds(*pid)? - at_start;
                total += used;
                Some(format!("{name} {used:.1}s"))
            })
            .collect();
        format!(
            "CPU during {phase} ({cores:.0} cores x {wall:.1}s = {:.1} core-s): {}; total {total:.1}s, the cores {:.0}% busy with these",
            cores * wall,
            parts.join(", "),
            100.0 * total / (cores * wall).max(f64::EPSILON)
        )
    }
}

/// The pid of a local control-plane component (`hack/control-plane/up` writes
/// `run/<name>.pid` beside the kubeconfig); None for another cluster.
pub fn control_plane_pid(kubeconfig: &std::path::Path, name: &str) -> Option<u32> {
    let file = kubeconfig.parent()?.join("run").join(format!("{name}.pid"));
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}
