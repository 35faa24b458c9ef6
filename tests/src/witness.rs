//! The witness of the leader-election tests: a file where every operator replica appends a line
//! when its controllers start and once they have all stopped, and where the test appends one
//! when it has killed a replica. Replayed, it gives each replica's controller-running intervals,
//! and [`assert_no_overlap`] proves that no two replicas ever ran controllers at once.
//!
//! A line is `<identity> start|stop|kill <CLOCK_MONOTONIC ns>`. Every writer is a process on
//! this machine reading the same monotonic clock through [`monotonic_now`], which uses the
//! vDSO or the syscall directly, never libc: a replica whose libc clock calls are faked by
//! libfaketime still witnesses true instants.
//!
//! The intervals are conservative: `start` is taken before the controllers are spawned, `stop`
//! after every controller task has ended, `kill` after the killed process was reaped.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use rustix::time::{ClockId, clock_gettime};

/// Now on `CLOCK_MONOTONIC`, read without libc (so libfaketime cannot skew it).
pub fn monotonic_now() -> Duration {
    let now = clock_gettime(ClockId::Monotonic);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// What a witness line says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The replica's controllers are about to start.
    Start,
    /// Every controller task of the replica has ended.
    Stop,
    /// The test killed the replica's process and reaped it: nothing of it runs any more.
    Kill,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Kill => "kill",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word {
            "start" => Some(Self::Start),
            "stop" => Some(Self::Stop),
            "kill" => Some(Self::Kill),
            _ => None,
        }
    }
}

/// One line of the witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The replica's identity.
    pub identity: String,
    /// What happened.
    pub event: Event,
    /// When, on `CLOCK_MONOTONIC`.
    pub at: Duration,
}

/// A span in which one replica ran controllers; `end` is `None` while it still runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// The replica's identity.
    pub identity: String,
    /// When its controllers started.
    pub start: Duration,
    /// When they had all stopped (or the process was reaped); `None`: still running.
    pub end: Option<Duration>,
}

impl Interval {
    /// The end, an open interval ending at `now`.
    pub fn end_or(&self, now: Duration) -> Duration {
        self.end.unwrap_or(now)
    }
}

/// Two replicas that ran controllers at the same time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The interval that started first.
    pub first: Interval,
    /// The interval that started while `first` was running.
    pub second: Interval,
    /// How long both ran.
    pub length: Duration,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = |i: &Interval| match i.end {
            Some(end) => format!("{:.3}s", end.as_secs_f64()),
            None => "still running".to_owned(),
        };
        write!(
            f,
            "{} and {} ran controllers at the same time for {:?}: {} from {:.3}s to {}, {} from {:.3}s to {} (CLOCK_MONOTONIC)",
            self.first.identity,
            self.second.identity,
            self.length,
            self.first.identity,
            self.first.start.as_secs_f64(),
            end(&self.first),
            self.second.identity,
            self.second.start.as_secs_f64(),
            end(&self.second),
        )
    }
}

/// The witness file.
#[derive(Clone, Debug)]
pub struct Witness {
    path: PathBuf,
}

impl Witness {
    /// The witness at `path` (created by the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens it for appending, for a writer that appends many times.
    ///
    /// # Errors
    /// When the file cannot be opened or created.
    pub fn open(&self) -> io::Result<Appender> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        Ok(Appender { file })
    }

    /// Appends one line stamped now.
    ///
    /// # Errors
    /// As [`Witness::open`] and [`Appender::append`].
    pub fn append(&self, identity: &str, event: Event) -> io::Result<Duration> {
        self.open()?.append(identity, event)
    }

    /// Every line so far; a missing file is an empty witness.
    ///
    /// # Errors
    /// When the file cannot be read or a line is malformed (the message quotes it).
    pub fn records(&self) -> Result<Vec<Record>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(format!("cannot read {}: {error}", self.path.display())),
        };
        parse(&text)
    }

    /// The controller-running intervals so far, in order of start.
    ///
    /// # Errors
    /// As [`Witness::records`] and [`intervals`].
    pub fn intervals(&self) -> Result<Vec<Interval>, String> {
        intervals(&self.records()?)
    }
}

/// A witness file open for appending (`O_APPEND`): each line goes out in one `write`, so lines
/// from concurrent processes never interleave.
#[derive(Debug)]
pub struct Appender {
    file: File,
}

impl Appender {
    /// Appends `<identity> <event> <now>` and returns the instant written.
    ///
    /// # Errors
    /// When the write fails or is short, or `identity` is empty or contains whitespace.
    pub fn append(&mut self, identity: &str, event: Event) -> io::Result<Duration> {
        if identity.is_empty() || identity.contains(char::is_whitespace) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a witness identity must be one non-empty word, not {identity:?}"),
            ));
        }
        let at = monotonic_now();
        let line = format!("{identity} {} {}\n", event.as_str(), at.as_nanos());
        let written = self.file.write(line.as_bytes())?;
        if written != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "short write to the witness: {written} of {} bytes",
                    line.len()
                ),
            ));
        }
        Ok(at)
    }
}

/// Parses witness lines; blank lines are skipped.
///
/// # Errors
/// A message quoting the first malformed line.
pub fn parse(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(number, line)| {
            let malformed = || format!("witness line {} is malformed: {line:?}", number + 1);
            let mut words = line.split_whitespace();
            let (Some(identity), Some(event), Some(at), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(malformed());
            };
            let event = Event::parse(event).ok_or_else(malformed)?;
            let nanos: u64 = at.parse().map_err(|_| malformed())?;
            Ok(Record {
                identity: identity.to_owned(),
                event,
                at: Duration::from_nanos(nanos),
            })
        })
        .collect()
}

/// Replays records (in file order, which is each replica's own order) into intervals sorted
/// by start. A `kill` closes the replica's open interval, if any.
///
/// # Errors
/// When a replica starts twice without stopping, stops without having started, or a record
/// goes back in time for its replica: the witness itself is then wrong.
pub fn intervals(records: &[Record]) -> Result<Vec<Interval>, String> {
    let mut done = Vec::new();
    let mut open: Vec<Interval> = Vec::new();
    let mut last: Vec<(&str, Duration)> = Vec::new();
    for record in records {
        let id = record.identity.as_str();
        match last.iter_mut().find(|(who, _)| *who == id) {
            Some((_, previous)) if *previous > record.at => {
                return Err(format!(
                    "witness goes back in time for {id}: {:?} after {previous:?}",
                    record.at
                ));
            }
            Some((_, previous)) => *previous = record.at,
            None => last.push((id, record.at)),
        }
        let running = open.iter().position(|i| i.identity == id);
        match (record.event, running) {
            (Event::Start, None) => open.push(Interval {
                identity: id.to_owned(),
                start: record.at,
                end: None,
            }),
            (Event::Start, Some(_)) => {
                return Err(format!(
                    "{id} started at {:?} while already running",
                    record.at
                ));
            }
            (Event::Stop | Event::Kill, Some(index)) => {
                let mut interval = open.swap_remove(index);
                interval.end = Some(record.at);
                done.push(interval);
            }
            (Event::Stop, None) => {
                return Err(format!(
                    "{id} stopped at {:?} without having started",
                    record.at
                ));
            }
            // A standby was killed.
            (Event::Kill, None) => {}
        }
    }
    done.extend(open);
    done.sort_by_key(|i| i.start);
    Ok(done)
}

/// Every pair of intervals of different replicas that overlap (open ones end at `now`), in
/// order of the later start.
pub fn overlaps(intervals: &[Interval], now: Duration) -> Vec<Overlap> {
    let mut sorted: Vec<&Interval> = intervals.iter().collect();
    sorted.sort_by_key(|i| i.start);
    let mut found = Vec::new();
    for (index, second) in sorted.iter().enumerate() {
        for first in &sorted[..index] {
            let first_end = first.end_or(now);
            if second.start < first_end && first.identity != second.identity {
                found.push(Overlap {
                    first: (*first).clone(),
                    second: (*second).clone(),
                    length: first_end.min(second.end_or(now)) - second.start,
                });
            }
        }
    }
    found
}

/// The first overlap, as [`overlaps`] orders them.
pub fn find_overlap(intervals: &[Interval], now: Duration) -> Option<Overlap> {
    overlaps(intervals, now).into_iter().next()
}

/// Panics, naming the replicas and each overlap, if two replicas ever ran controllers at once.
pub fn assert_no_overlap(intervals: &[Interval]) {
    let found = overlaps(intervals, monotonic_now());
    if !found.is_empty() {
        let list: Vec<String> = found.iter().map(ToString::to_string).collect();
        panic!("two leaders at once:\n{}", list.join("\n"));
    }
}

/// The replicas whose controllers run now (open intervals).
pub fn running(intervals: &[Interval]) -> Vec<&str> {
    intervals
        .iter()
        .filter(|i| i.end.is_none())
        .map(|i| i.identity.as_str())
        .collect()
}

/// The first `start` after `after` by a replica other than `except`.
pub fn first_start_after<'r>(
    records: &'r [Record],
    after: Duration,
    except: Option<&str>,
) -> Option<&'r Record> {
    records
        .iter()
        .filter(|r| r.event == Event::Start && r.at > after)
        .filter(|r| except != Some(r.identity.as_str()))
        .min_by_key(|r| r.at)
}

/// The witness relative to `origin`, one line per record in time order, for failure output.
pub fn render(records: &[Record], origin: Duration) -> String {
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by_key(|r| r.at);
    sorted
        .iter()
        .map(|r| {
            let t = r.at.as_secs_f64() - origin.as_secs_f64();
            format!("  {t:>9.3}s  {:<14} {}\n", r.identity, r.event.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn interval(identity: &str, start: u64, end: Option<u64>) -> Interval {
        Interval {
            identity: identity.into(),
            start: ms(start),
            end: end.map(ms),
        }
    }

    #[test]
    fn parses_and_replays_a_handover_a_kill_and_a_running_leader() {
        let text = "a start 1000000000\nb kill 1500000000\n\na stop 2000000000\n\
                    b start 2100000000\nb kill 3000000000\nc start 4000000000\n";
        let records = parse(text).unwrap();
        assert_eq!(records.len(), 6);
        let intervals = intervals(&records).unwrap();
        assert_eq!(
            intervals,
            vec![
                interval("a", 1000, Some(2000)),
                interval("b", 2100, Some(3000)),
                interval("c", 4000, None),
            ]
        );
        assert_eq!(running(&intervals), vec!["c"]);
        assert_eq!(find_overlap(&intervals, ms(10_000)), None);
        let after = first_start_after(&records, ms(2000), Some("a")).unwrap();
        assert_eq!((after.identity.as_str(), after.at), ("b", ms(2100)));
    }

    #[test]
    fn rejects_malformed_lines_and_impossible_histories() {
        assert!(parse("a start").unwrap_err().contains("line 1"));
        assert!(parse("a begin 5").is_err());
        assert!(parse("a start -5").is_err());
        assert!(parse("a start 5 extra").is_err());
        let twice = parse("a start 1\na start 2\n").unwrap();
        assert!(intervals(&twice).unwrap_err().contains("already running"));
        let unstarted = parse("a stop 1\n").unwrap();
        assert!(intervals(&unstarted).is_err());
        let backwards = parse("a start 5\na stop 4\n").unwrap();
        assert!(intervals(&backwards).unwrap_err().contains("back in time"));
    }

    #[test]
    fn finds_overlaps_including_with_a_still_running_replica() {
        let touching = [interval("a", 0, Some(10)), interval("b", 10, None)];
        assert_eq!(find_overlap(&touching, ms(50)), None);

        let nested = [
            interval("a", 0, Some(100)),
            interval("b", 20, Some(30)),
            interval("c", 200, None),
        ];
        let overlap = find_overlap(&nested, ms(300)).unwrap();
        assert_eq!(
            (
                overlap.first.identity.as_str(),
                overlap.second.identity.as_str()
            ),
            ("a", "b")
        );
        assert_eq!(overlap.length, ms(10));

        // A long first interval still overlaps a later one after a short one in between.
        let long = [
            interval("a", 0, None),
            interval("b", 10, Some(11)),
            interval("c", 20, Some(30)),
        ];
        assert_eq!(find_overlap(&long, ms(15)).unwrap().second.identity, "b");
        assert_eq!(overlaps(&long, ms(15)).len(), 1);
        assert_eq!(overlaps(&long, ms(40)).len(), 2);
        let message = find_overlap(&long, ms(40)).unwrap().to_string();
        assert!(
            message.contains("a and b") && message.contains("still running"),
            "{message}"
        );
    }

    #[test]
    fn appends_whole_lines_and_refuses_bad_identities() {
        let dir = tempfile::tempdir().unwrap();
        let witness = Witness::new(dir.path().join("witness"));
        assert_eq!(witness.records().unwrap(), vec![]);
        let started = witness.append("a", Event::Start).unwrap();
        let stopped = witness.append("a", Event::Stop).unwrap();
        assert!(started <= stopped && stopped <= monotonic_now());
        assert!(witness.append("two words", Event::Start).is_err());
        assert_eq!(
            witness.intervals().unwrap(),
            vec![Interval {
                identity: "a".into(),
                start: started,
                end: Some(stopped),
            }]
        );
    }
}
