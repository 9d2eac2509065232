//! The peer swarm under a wave of cold pulls: one hub (`[p2p]` on) and N
//! host agents (N = 4 and 8), each on its own loopback address, all
//! pulling the same cold image (one 512 MiB layer) at the same moment,
//! each like a docker pull: the manifest, the config, then the layer in
//! ranged GETs, every byte hashed and checked against its digest.
//!
//! Printed per N:
//! - hub-storage bytes / image size: what the hub's storage served (blob
//!   bytes over HTTP plus piece bytes over the swarm, from the hub's
//!   `/metrics`) divided by the image size; target ≤ 1.1, where N agents
//!   pulling straight from the hub make it N (measured too, same hub);
//! - the time until the last agent has the image, relative to one agent
//!   pulling alone from a hub of its own; target ≤ 1.5×;
//! - each agent's peak RSS (VmHWM);
//! - the CPU the agents, the hub, the clients and the whole machine spent
//!   during each wave, and the wave's CPU floor: N agents and clients
//!   doing at least the work of the one alone, on this machine's cores.
//!   Where the floor is above 1.5× the time target cannot be met here,
//!   whatever the swarm does: the hosts a real cluster spreads over N
//!   machines share these cores.
//!
//! Run: `cargo bench --bench swarm`. `BENCH_SWARM_MIB` (default 512) sets
//! the layer size, `BENCH_SWARM_NS` (default `4,8`) the swarm sizes.
//!
//! On loopback (the default) every host has unlimited bandwidth and all
//! share this machine's cores, so the CPU bounds every wave. With
//! `BENCH_SWARM_LINK=RATE` (tc syntax: `1gbit`, `500mbit`; needs root)
//! each host gets a network namespace and one link shaped to RATE each way
//! (`swarm/lan.rs`), as machines with one NIC each; the layer is pushed before
//! the links are shaped, and each client pulls inside its agent's host.

#[path = "../tests/p2p/swarm.rs"]
mod swarm;

#[path = "swarm/lan.rs"]
mod lan;

use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use swarm::*;

const MIB: u64 = 1 << 20;
/// Size of each ranged GET of the layer.
const RANGE: u64 = 64 * MIB;

struct ImageRef {
    repo: String,
    manifest: String,
    config: String,
    layer: String,
    size: u64,
}

/// Writes the layer to a file (hashing it) and pushes the image.
fn push(hub: &Hub, layer_file: &std::path::Path, layer_digest: &str, size: u64) -> ImageRef {
    let repo = "bench/swarm";
    let p = Pusher::new(hub, repo);
    let f = std::fs::File::open(layer_file).unwrap();
    p.blob_from(layer_digest, reqwest::blocking::Body::sized(f, size));
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    })
    .to_string();
    let config_digest = p.blob(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest},
        "layers": [{"mediaType": DOCKER_LAYER, "size": size, "digest": layer_digest}],
    })
    .to_string();
    p.manifest("v1", DOCKER_MANIFEST, manifest.as_bytes());
    ImageRef {
        repo: repo.into(),
        manifest: "v1".into(),
        config: config_digest,
        layer: layer_digest.into(),
        size,
    }
}

fn make_layer(dir: &std::path::Path, size: u64) -> (std::path::PathBuf, String) {
    let path = dir.join("layer.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut h = Sha256::new();
    let mut left = size;
    let mut seed = 1;
    while left > 0 {
        let n = left.min(8 * MIB);
        let chunk = pseudo_random(seed, n as usize);
        h.update(&chunk);
        f.write_all(&chunk).unwrap();
        left -= n;
        seed += 1;
    }
    f.flush().unwrap();
    (path, format!("sha256:{}", hex::encode(h.finalize())))
}

/// Pulls the image from `base` like docker: manifest, config, layer in
/// ranged GETs; checks every digest. The body is read on the thread that
/// drives the connection (a runtime of its own), as Go's HTTP client does
/// in dockerd. reqwest's blocking client hands every chunk from its
/// connection thread to the reader's, a thread switch per chunk that cost
/// about a fifth of each client's CPU (0.6–0.7 against 0.5 core-seconds
/// per 512 MiB alone), which the agents sharing these cores paid for in
/// a wave; on a real cluster each host's client has its own CPU.
fn pull(base: &str, img: &ImageRef) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pull_async(base, img));
}

async fn pull_async(base: &str, img: &ImageRef) {
    let h = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let m = h
        .get(format!("{base}/v2/{}/manifests/{}", img.repo, img.manifest))
        .header("accept", DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200, "manifest from {base}");
    let _ = m.bytes().await.unwrap();
    let config = format!("{base}/v2/{}/blobs/{}", img.repo, img.config);
    let r = h.get(&config).send().await.unwrap();
    assert_eq!(r.status(), 200, "config from {base}");
    let mut hasher = Sha256::new();
    hash_body(r, &mut hasher).await;
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        img.config,
        "config from {base}"
    );
    let url = format!("{base}/v2/{}/blobs/{}", img.repo, img.layer);
    let mut hasher = Sha256::new();
    let mut pos = 0;
    while pos < img.size {
        let end = (pos + RANGE).min(img.size);
        let r = h
            .get(&url)
            .header("range", format!("bytes={pos}-{}", end - 1))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "range {pos}- from {base}");
        let got = hash_body(r, &mut hasher).await;
        assert_eq!(got, end - pos, "range {pos}- from {base}");
        pos = end;
    }
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        img.layer,
        "layer digest via {base}"
    );
}

/// Feeds a response body to `hasher` as it arrives; returns its length.
async fn hash_body(mut r: reqwest::Response, hasher: &mut Sha256) -> u64 {
    let mut len = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        hasher.update(&chunk);
        len += chunk.len() as u64;
    }
    len
}

/// Every base pulls at once, each from `hosts[i]` if given; returns each
/// one's time from the common start.
fn wave(bases: &[String], img: &Arc<ImageRef>, hosts: Option<&[Host]>) -> Vec<Duration> {
    let barrier = Arc::new(Barrier::new(bases.len()));
    let threads: Vec<_> = bases
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let (b, img, barrier) = (b.clone(), img.clone(), barrier.clone());
            let host = hosts.map(|h| h[i].clone());
            std::thread::spawn(move || {
                if let Some(h) = &host {
                    lan::enter(h);
                }
                barrier.wait();
                let t = Instant::now();
                pull(&b, &img);
                t.elapsed()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn hub(lan: Option<&lan::Lan>) -> Hub {
    Hub::start(HubOptions {
        auth: false,
        p2p: true,
        piece_size: None,
        host: lan.map(|l| l.hosts[0].clone()),
    })
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Core-seconds the whole machine has spent busy (not idle, not waiting
/// for I/O), from `/proc/stat`.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let busy: u64 = f.iter().take(8).sum::<u64>() - f[3] - f[4];
    busy as f64 / clock_ticks_per_sec()
}

/// CPU spent during a wave: by the agents, the hub, the clients (this
/// process) and the machine as a whole (which adds the kernel's network
/// work done outside those processes).
struct Cpu {
    agents: f64,
    hub: f64,
    clients: f64,
    machine: f64,
}

impl Cpu {
    fn sample(hub: &Hub, agents: &[&Agent]) -> Cpu {
        Cpu {
            agents: agents.iter().map(|a| a.cpu_secs()).sum(),
            hub: hub.cpu_secs(),
            clients: cpu_secs(std::process::id()),
            machine: machine_busy_secs(),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            agents: self.agents - before.agents,
            hub: self.hub - before.hub,
            clients: self.clients - before.clients,
            machine: self.machine - before.machine,
        }
    }

    /// The line printed for a wave of `wall` on `cores`.
    fn describe(&self, wall: Duration, cores: usize) -> String {
        format!(
            "CPU core-seconds: agents {:.1}, hub {:.1}, clients {:.1}, machine {:.1} \
             ({:.0}% of {cores} cores over the wave)",
            self.agents,
            self.hub,
            self.clients,
            self.machine,
            100.0 * self.machine / (secs(wall) * cores as f64)
        )
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mib: u64 = std::env::var("BENCH_SWARM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let ns: Vec<u8> = std::env::var("BENCH_SWARM_NS")
        .unwrap_or_else(|_| "4,8".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let size = mib * MIB;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let link = std::env::var("BENCH_SWARM_LINK").ok();
    let lan = link
        .as_ref()
        .map(|_| lan::Lan::new(*ns.iter().max().unwrap_or(&1) as usize + 1));
    let lan = lan.as_ref();
    let shape = || {
        if let (Some(l), Some(rate)) = (lan, &link) {
            l.shape(rate);
        }
    };
    let unshape = || {
        if let Some(l) = lan {
            l.unshape();
        }
    };
    // Agent i's host, if on the LAN.
    let host = |i: u8| lan.map(|l| &l.hosts[i as usize]);
    let hosts = |n: u8| lan.map(|l| &l.hosts[1..=n as usize]);
    let tmp = tempfile::Builder::new()
        .prefix("dockyard-bench-swarm-")
        .tempdir()
        .unwrap();
    let (layer, digest) = make_layer(tmp.path(), size);
    match &link {
        Some(rate) => println!(
            "swarm benchmark: one {mib} MiB layer, N = {ns:?}, every host on its own {rate} link"
        ),
        None => println!("swarm benchmark: one {mib} MiB layer, N = {ns:?}, all on loopback"),
    }

    // One agent alone, on a hub of its own.
    let solo = {
        let hub = hub(lan);
        let img = Arc::new(push(&hub, &layer, &digest, size));
        shape();
        let agent = Agent::start_on(&hub, 1, "4G", host(1));
        std::thread::sleep(Duration::from_millis(500));
        let cpu = Cpu::sample(&hub, &[&agent]);
        let t = wave(&[agent.url("")], &img, hosts(1))[0];
        let cpu = Cpu::sample(&hub, &[&agent]).since(&cpu);
        let ratio = hub.storage_bytes_served() / size as f64;
        println!(
            "one agent alone: {:.2} s, hub storage {ratio:.2}× the image, peak RSS {} MiB; {}",
            secs(t),
            agent.peak_rss_kib() / 1024,
            cpu.describe(t, cores)
        );
        unshape();
        (t, cpu)
    };
    let (solo, solo_cpu) = solo;

    let mut rows = Vec::new();
    for &n in &ns {
        let hub = hub(lan);
        let img = Arc::new(push(&hub, &layer, &digest, size));
        shape();
        let before = hub.storage_bytes_served();
        let agents: Vec<Agent> = (1..=n)
            .map(|i| Agent::start_on(&hub, i, "4G", host(i)))
            .collect();
        // Let the agents join the swarm (identify, Kademlia bootstrap).
        std::thread::sleep(Duration::from_secs(1));
        let bases: Vec<String> = agents.iter().map(|a| a.url("")).collect();
        let all: Vec<&Agent> = agents.iter().collect();
        let cpu = Cpu::sample(&hub, &all);
        let times = wave(&bases, &img, hosts(n));
        let last = times.iter().max().copied().unwrap();
        // Each agent and its client do at least the work of the one alone
        // (take, verify and serve the whole image; trading pieces only
        // adds), the hub serves about one copy: no wave on this machine's
        // cores ends sooner than that work takes them.
        let floor = (n as f64 * (solo_cpu.machine - solo_cpu.hub) + solo_cpu.hub) / cores as f64;
        println!(
            "N = {n}: {}; the CPU floor of the wave on this machine: {floor:.2} s = {:.2}× one agent alone",
            Cpu::sample(&hub, &all).since(&cpu).describe(last, cores),
            floor / secs(solo),
        );
        println!(
            "N = {n}: each agent done after (s): {}",
            times
                .iter()
                .map(|t| format!("{:.2}", secs(*t)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let hub_ratio = (hub.storage_bytes_served() - before) / size as f64;
        let rss: Vec<u64> = agents.iter().map(|a| a.peak_rss_kib() / 1024).collect();
        let from_origin: f64 = agents
            .iter()
            .map(|a| a.metric("bytes_from_origin_total"))
            .sum();
        let from_peers: f64 = agents
            .iter()
            .map(|a| a.metric("bytes_from_peers_total"))
            .sum();
        drop(agents);

        // The same wave straight from the hub, no swarm.
        let before = hub.storage_bytes_served();
        let direct: Vec<String> = (0..n).map(|_| hub.base.clone()).collect();
        let direct_times = wave(&direct, &img, hosts(n));
        let direct_last = direct_times.iter().max().copied().unwrap();
        let direct_ratio = (hub.storage_bytes_served() - before) / size as f64;
        unshape();

        println!(
            "N = {n}: hub storage {hub_ratio:.3}× the image (target ≤ 1.1; without the swarm {direct_ratio:.2}×), \
             last agent done in {:.2} s = {:.2}× one agent alone (target ≤ 1.5×; without the swarm {:.2} s = {:.2}×), \
             agents got {:.0} MiB from peers and {:.0} MiB from the hub's HTTP origin, peak RSS MiB {rss:?}",
            secs(last),
            secs(last) / secs(solo),
            secs(direct_last),
            secs(direct_last) / secs(solo),
            from_peers / MIB as f64,
            from_origin / MIB as f64,
        );
        rows.push((
            n,
            hub_ratio,
            direct_ratio,
            secs(last) / secs(solo),
            secs(direct_last) / secs(solo),
            rss,
        ));
    }

    println!();
    println!(
        "| N | hub storage / image | without swarm | last agent / one alone | without swarm | peak RSS per agent (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    for (n, hub_ratio, direct_ratio, time_ratio, direct_time, rss) in &rows {
        let ok = |b: bool| if b { "ok" } else { "MISSED" };
        println!(
            "| {n} | {hub_ratio:.3} ({}) | {direct_ratio:.2} | {time_ratio:.2}× ({}) | {direct_time:.2}× | {} |",
            ok(*hub_ratio <= 1.1),
            ok(*time_ratio <= 1.5),
            rss.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
