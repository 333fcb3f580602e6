//! The nemesis: a seeded schedule of faults, each injected, held, then healed, alone or two
//! at once, with a log of what was injected when.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::proxy::Mode;
use crate::rng::XorShift;

/// What kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Drop,
    BlackHole,
    Delay,
    RestartRedis,
    PauseRedis,
    KillReplica,
    /// A Redis Cluster primary killed and its replica promoted (cluster runs only).
    FailOver,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Drop,
        Kind::BlackHole,
        Kind::Delay,
        Kind::RestartRedis,
        Kind::PauseRedis,
        Kind::KillReplica,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Drop => "drop",
            Kind::BlackHole => "black hole",
            Kind::Delay => "delay",
            Kind::RestartRedis => "Redis restarted empty",
            Kind::PauseRedis => "Redis paused",
            Kind::KillReplica => "replica killed",
            Kind::FailOver => "primary failed over",
        }
    }
}

/// One fault, with its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// Replica `.0`'s proxy closes every connection and refuses new ones.
    Drop(usize),
    /// Replica `.0`'s proxy becomes a black hole.
    BlackHole(usize),
    /// Replica `.0`'s proxy delays every chunk by `.1` ms.
    Delay(usize, u64),
    /// Redis killed (-9), started empty on heal.
    RestartRedis,
    /// Redis stopped (SIGSTOP), continued on heal.
    PauseRedis,
    /// Replica `.0` killed (-9), started again on heal.
    KillReplica(usize),
    /// The Redis Cluster primary of the `.0`-th slot range killed (-9); injected once its
    /// replica took over; the killed node started again (a replica now) on heal.
    FailOver(usize),
}

impl Fault {
    pub fn kind(self) -> Kind {
        match self {
            Fault::Drop(_) => Kind::Drop,
            Fault::BlackHole(_) => Kind::BlackHole,
            Fault::Delay(..) => Kind::Delay,
            Fault::RestartRedis => Kind::RestartRedis,
            Fault::PauseRedis => Kind::PauseRedis,
            Fault::KillReplica(_) => Kind::KillReplica,
            Fault::FailOver(_) => Kind::FailOver,
        }
    }

    /// What it strikes: a replica (its process or its link to Redis), or Redis (`None`).
    fn target(self) -> Option<usize> {
        match self {
            Fault::Drop(r) | Fault::BlackHole(r) | Fault::Delay(r, _) | Fault::KillReplica(r) => {
                Some(r)
            }
            Fault::RestartRedis | Fault::PauseRedis | Fault::FailOver(_) => None,
        }
    }

    async fn inject(self, cluster: &Cluster) -> Result<(), String> {
        match self {
            Fault::Drop(r) => cluster.proxy(r, Mode::Drop).await,
            Fault::BlackHole(r) => cluster.proxy(r, Mode::BlackHole).await,
            Fault::Delay(r, ms) => {
                let mode = Mode::Delay(Duration::from_millis(ms));
                cluster.proxy(r, mode).await
            }
            Fault::RestartRedis => {
                cluster.redis.kill();
                Ok(())
            }
            Fault::PauseRedis => cluster.redis.pause(),
            Fault::KillReplica(r) => {
                cluster.kill_replica(r);
                Ok(())
            }
            Fault::FailOver(shard) => redis_cluster(cluster)?.fail_over(shard).await,
        }
    }

    async fn heal(self, cluster: &Cluster) -> Result<(), String> {
        match self {
            Fault::Drop(r) | Fault::BlackHole(r) | Fault::Delay(r, _) => {
                cluster.proxy(r, Mode::Pass).await
            }
            Fault::RestartRedis => cluster.redis.boot().await,
            Fault::PauseRedis => cluster.redis.resume(),
            Fault::KillReplica(r) => cluster.restart_replica(r).await,
            Fault::FailOver(_) => redis_cluster(cluster)?.restart_killed().await,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::Drop(r) => write!(f, "drop r{r}"),
            Fault::BlackHole(r) => write!(f, "black hole r{r}"),
            Fault::Delay(r, ms) => write!(f, "delay r{r} {ms} ms"),
            Fault::RestartRedis => write!(f, "restart Redis empty"),
            Fault::PauseRedis => write!(f, "pause Redis"),
            Fault::KillReplica(r) => write!(f, "kill -9 r{r}"),
            Fault::FailOver(shard) => write!(f, "fail over primary {shard}"),
        }
    }
}

fn redis_cluster(cluster: &Cluster) -> Result<&crate::redis_cluster::RedisCluster, String> {
    cluster
        .redis_cluster
        .as_ref()
        .ok_or_else(|| "a failover needs a Redis Cluster".to_string())
}

/// A fault of an episode: `offset` after the episode's start, held for `hold`.
#[derive(Clone, Debug)]
pub struct Planned {
    pub fault: Fault,
    pub offset: Duration,
    pub hold: Duration,
}

/// A quiet gap, then one fault or two overlapping ones.
#[derive(Clone, Debug)]
pub struct Episode {
    pub gap: Duration,
    pub faults: Vec<Planned>,
}

impl Episode {
    /// A guess of its length, restarts included.
    fn estimate(&self) -> Duration {
        let busy = self.faults.iter().map(|p| {
            let restart = match p.fault {
                Fault::KillReplica(_) => Duration::from_millis(1500),
                _ => Duration::ZERO,
            };
            p.offset + p.hold + restart
        });
        self.gap + busy.max().unwrap_or_default()
    }
}

/// The schedule: every kind alone, a black hole while Redis restarts, a random pair (these
/// first, shuffled: `mandatory`), then random episodes while `budget` lasts.
pub struct Plan {
    pub episodes: Vec<Episode>,
    pub mandatory: usize,
}

pub fn plan(seed: u64, replicas: usize, budget: Duration) -> Plan {
    let mut rng = XorShift::new(seed, 1);
    let mut episodes: Vec<Episode> = Kind::ALL
        .iter()
        .map(|&k| {
            let f = fault_of(&mut rng, k, replicas);
            single(&mut rng, f)
        })
        .collect();
    let hole = Fault::BlackHole(rng.below(replicas as u64) as usize);
    episodes.push(pair(&mut rng, hole, Fault::RestartRedis));
    let (a, b) = random_pair(&mut rng, replicas);
    episodes.push(pair(&mut rng, a, b));
    rng.shuffle(&mut episodes);
    let mandatory = episodes.len();
    let mut used: Duration = episodes.iter().map(Episode::estimate).sum();
    loop {
        let e = if rng.below(10) < 4 {
            let (a, b) = random_pair(&mut rng, replicas);
            pair(&mut rng, a, b)
        } else {
            let k = Kind::ALL[rng.below(Kind::ALL.len() as u64) as usize];
            let f = fault_of(&mut rng, k, replicas);
            single(&mut rng, f)
        };
        used += e.estimate();
        if used > budget {
            break;
        }
        episodes.push(e);
    }
    Plan {
        episodes,
        mandatory,
    }
}

fn fault_of(rng: &mut XorShift, kind: Kind, replicas: usize) -> Fault {
    let r = rng.below(replicas as u64) as usize;
    match kind {
        Kind::Drop => Fault::Drop(r),
        Kind::BlackHole => Fault::BlackHole(r),
        Kind::Delay => Fault::Delay(r, [150, 300, 300, 600][rng.below(4) as usize]),
        Kind::RestartRedis => Fault::RestartRedis,
        Kind::PauseRedis => Fault::PauseRedis,
        Kind::KillReplica => Fault::KillReplica(r),
        Kind::FailOver => Fault::FailOver(rng.below(3) as usize),
    }
}

/// How long a fault is held: a pause about a second, the others 0.5–2 s.
fn hold(rng: &mut XorShift, fault: Fault) -> Duration {
    let ms = match fault {
        Fault::PauseRedis => rng.between(800, 1200),
        _ => rng.between(500, 2000),
    };
    Duration::from_millis(ms)
}

fn gap(rng: &mut XorShift) -> Duration {
    Duration::from_millis(rng.between(500, 1500))
}

fn single(rng: &mut XorShift, fault: Fault) -> Episode {
    let hold = hold(rng, fault);
    Episode {
        gap: gap(rng),
        faults: vec![Planned {
            fault,
            offset: Duration::ZERO,
            hold,
        }],
    }
}

/// `a`, and `b` starting while `a` is held.
fn pair(rng: &mut XorShift, a: Fault, b: Fault) -> Episode {
    let hold_a = hold(rng, a);
    let offset = Duration::from_millis(rng.below(hold_a.as_millis() as u64 * 2 / 3));
    let hold_b = hold(rng, b);
    Episode {
        gap: gap(rng),
        faults: vec![
            Planned {
                fault: a,
                offset: Duration::ZERO,
                hold: hold_a,
            },
            Planned {
                fault: b,
                offset,
                hold: hold_b,
            },
        ],
    }
}

/// Two faults of random kinds on different targets.
fn random_pair(rng: &mut XorShift, replicas: usize) -> (Fault, Fault) {
    let draw = |rng: &mut XorShift| {
        let k = Kind::ALL[rng.below(Kind::ALL.len() as u64) as usize];
        fault_of(rng, k, replicas)
    };
    let a = draw(rng);
    loop {
        let b = draw(rng);
        if b.target() != a.target() {
            return (a, b);
        }
    }
}

/// The schedule of a Redis Cluster run: each of the three primaries fails over once, the
/// second while a replica is killed.
pub fn failover_plan(seed: u64, replicas: usize) -> Plan {
    let mut rng = XorShift::new(seed, 2);
    let mut episodes = vec![single(&mut rng, Fault::FailOver(0))];
    let victim = Fault::KillReplica(rng.below(replicas as u64) as usize);
    episodes.push(pair(&mut rng, Fault::FailOver(1), victim));
    episodes.push(single(&mut rng, Fault::FailOver(2)));
    let mandatory = episodes.len();
    Plan {
        episodes,
        mandatory,
    }
}

/// One fault as injected: from injection to the end of its heal, in ns since the run's start.
#[derive(Clone, Debug, Serialize)]
pub struct Injected {
    pub fault: Fault,
    pub episode: usize,
    /// Part of an overlapping pair.
    pub overlapping: bool,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pair = if self.overlapping { " (pair)" } else { "" };
        write!(
            f,
            "#{} {}{pair}: {:.3}–{:.3} s",
            self.episode,
            self.fault,
            self.start_ns as f64 / 1e9,
            self.end_ns as f64 / 1e9
        )
    }
}

/// Runs the plan: the mandatory episodes, then the others while they fit before `until`.
/// Every fault injected is healed, even when another failed.
pub async fn run(
    cluster: &Cluster,
    plan: &Plan,
    start: Instant,
    until: Instant,
) -> Result<Vec<Injected>, String> {
    let mut log = Vec::new();
    for (n, episode) in plan.episodes.iter().enumerate() {
        if n >= plan.mandatory && Instant::now() + episode.estimate() > until {
            break;
        }
        tokio::time::sleep(episode.gap).await;
        let overlapping = episode.faults.len() > 1;
        let runs = episode.faults.iter().map(|p| async move {
            tokio::time::sleep(p.offset).await;
            let start_ns = start.elapsed().as_nanos() as u64;
            let injected = p.fault.inject(cluster).await;
            if injected.is_ok() {
                tokio::time::sleep(p.hold).await;
            }
            let healed = p.fault.heal(cluster).await;
            let end_ns = start.elapsed().as_nanos() as u64;
            injected.and(healed).map(|()| Injected {
                fault: p.fault,
                episode: n,
                overlapping,
                start_ns,
                end_ns,
            })
        });
        for r in futures::future::join_all(runs).await {
            log.push(r.map_err(|e| format!("episode {n}: {e}"))?);
        }
    }
    Ok(log)
}
