//! A cheap first pass over a YAML file, before serde sees it: refuses nesting deeper than
//! [`MAX_DEPTH`] and aliases that expand the file past [`MAX_NODES`] values.
//!
//! Both are cheap to write and expensive to parse. libyaml's scanner does work proportional to
//! the flow nesting depth for every token, so 400 KB of `[` took four minutes of CPU; and
//! yaml_serde replays an anchored node's events for every alias of it, so a 616 KB file that
//! repeats a 1000-account list 20,000 times became 20 million strings (1.1 GB). This pass reads
//! the events of the same parser yaml_serde uses (libyaml-rs, so it cannot disagree about what
//! is quoted, a comment or a block scalar) one at a time, keeps nothing but the open
//! collections and the size of each anchored node, and stops at the first event over a limit:
//! with the depth bounded, libyaml's work per token is bounded, and the whole pass is linear.
//! Syntax errors are left to yaml_serde, which reports them as it always did.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::mem::MaybeUninit;

use libyaml_rs as sys;

/// Deepest nesting of mappings and sequences accepted, aliases expanded. The configuration
/// needs 6 (`targets[].discover.filters.NAME[]` under the top-level mapping), the web
/// configuration 3; 32 leaves room for any future field and still parses in microseconds.
pub const MAX_DEPTH: usize = 32;

/// Most values (scalars, mappings and sequences, an alias counting as all it repeats) in one
/// file. The shortest values a configuration takes in numbers are AMI IDs in a flow list, 13
/// bytes each, so a file of the largest size written out in full holds at most about 80,000:
/// 250,000 is three times that, reached only through aliases or values no field takes (a
/// 1 MiB file of `{a,a,a,...}` is a million). It also bounds yaml_serde's work: every value is
/// an event it keeps in memory (about 130 bytes each) and, for an alias, replays.
pub const MAX_NODES: u64 = 250_000;

/// Longest map key shown in a field path; longer ones are cut (keys can be 1,024 characters).
const MAX_KEY_SHOWN: usize = 40;

/// Checks `text` against [`MAX_DEPTH`] and [`MAX_NODES`]; the error is (field path, reason).
pub fn check(text: &str) -> Result<(), (String, String)> {
    let Some(mut parser) = Parser::new(text) else { return Ok(()) };
    let mut scan = Scan::default();
    // A syntax error ends the pass: yaml_serde reads the same events and reports it.
    while let Some((event, mark)) = parser.next_event() {
        if !scan.event(event).map_err(|message| (scan.path(), format!("{message} at {mark}")))? {
            break;
        }
    }
    Ok(())
}

/// An open mapping or sequence.
struct Open {
    /// Mapping: the current key, and whether the next value is a key. Sequence: no key, and
    /// the index of the next item.
    key: Option<String>,
    at_key: bool,
    index: Option<usize>,
    anchor: Option<Vec<u8>>,
    /// Values counted before this one started.
    nodes_before: u64,
    /// The deepest nesting below this collection so far, aliases expanded.
    height_below: usize,
}

#[derive(Default)]
struct Scan {
    open: Vec<Open>,
    nodes: u64,
    /// Anchored nodes seen in this document: (values, nesting) of each.
    anchors: HashMap<Vec<u8>, (u64, usize)>,
}

impl Scan {
    /// Takes one event; `Ok(false)` at the end of the stream.
    fn event(&mut self, event: Event) -> Result<bool, String> {
        match event {
            Event::StreamEnd => return Ok(false),
            Event::DocumentStart => {
                self.anchors.clear();
                self.open.clear();
            }
            Event::Other => {}
            Event::Scalar { anchor, value } => {
                self.starting(Some(&value));
                self.count(1)?;
                if let Some(anchor) = anchor {
                    self.anchors.insert(anchor, (1, 0));
                }
                self.completed(0);
            }
            Event::Alias { anchor } => {
                self.starting(None);
                if self.open.iter().any(|o| o.anchor.as_deref() == Some(&anchor)) {
                    return Err(format!("alias *{} is inside the node it repeats", String::from_utf8_lossy(&anchor)));
                }
                // An unknown anchor is yaml_serde's error to report.
                let (size, height) = self.anchors.get(&anchor).copied().unwrap_or((1, 0));
                if self.open.len() + height > MAX_DEPTH {
                    return Err(format!(
                        "alias *{} nests values more than {MAX_DEPTH} levels deep",
                        String::from_utf8_lossy(&anchor)
                    ));
                }
                self.count(size).map_err(|m| format!("alias *{}: {m}", String::from_utf8_lossy(&anchor)))?;
                self.completed(height);
            }
            Event::Start { anchor, mapping } => {
                self.starting(None);
                if self.open.len() >= MAX_DEPTH {
                    return Err(format!("mappings and sequences are nested more than {MAX_DEPTH} levels deep"));
                }
                self.count(1)?;
                self.open.push(Open {
                    key: None,
                    at_key: mapping,
                    index: (!mapping).then_some(0),
                    anchor,
                    nodes_before: self.nodes - 1,
                    height_below: 0,
                });
            }
            Event::End => {
                if let Some(closed) = self.open.pop() {
                    let height = closed.height_below + 1;
                    if let Some(anchor) = closed.anchor {
                        self.anchors.insert(anchor, (self.nodes - closed.nodes_before, height));
                    }
                    self.completed(height);
                }
            }
        }
        Ok(true)
    }

    /// A value starts in the innermost collection; a scalar in key position names the key.
    fn starting(&mut self, scalar: Option<&[u8]>) {
        if let Some(parent) = self.open.last_mut()
            && parent.index.is_none()
            && parent.at_key
        {
            parent.key = Some(scalar.map_or_else(|| "?".to_owned(), shown_key));
        }
    }

    /// A value of nesting `height` ended in the innermost collection.
    fn completed(&mut self, height: usize) {
        if let Some(parent) = self.open.last_mut() {
            parent.height_below = parent.height_below.max(height);
            match &mut parent.index {
                Some(index) => *index += 1,
                None => parent.at_key = !parent.at_key,
            }
        }
    }

    fn count(&mut self, values: u64) -> Result<(), String> {
        self.nodes = self.nodes.saturating_add(values);
        if self.nodes > MAX_NODES {
            return Err(format!("more than {MAX_NODES} values (an alias counting as all it repeats)"));
        }
        Ok(())
    }

    /// Where the value being read is, written as serde_path_to_error writes paths.
    fn path(&self) -> String {
        let mut path = String::new();
        for open in &self.open {
            match (open.index, &open.key) {
                (Some(index), _) => {
                    let _ = write!(path, "[{index}]");
                }
                (None, Some(key)) if !open.at_key => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                }
                (None, _) => {}
            }
        }
        if path.is_empty() { "(top level)".to_owned() } else { path }
    }
}

fn shown_key(bytes: &[u8]) -> String {
    let key = String::from_utf8_lossy(bytes);
    match key.char_indices().nth(MAX_KEY_SHOWN) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None if key.is_empty() => "\"\"".to_owned(),
        None => key.into_owned(),
    }
}

/// What the pass needs of a libyaml event.
enum Event {
    StreamEnd,
    DocumentStart,
    Scalar { anchor: Option<Vec<u8>>, value: Vec<u8> },
    Alias { anchor: Vec<u8> },
    Start { anchor: Option<Vec<u8>>, mapping: bool },
    End,
    Other,
}

/// Where an event starts, as yaml_serde writes it.
struct Mark {
    line: u64,
    column: u64,
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} column {}", self.line + 1, self.column + 1)
    }
}

/// libyaml's event parser over a string, as yaml_serde drives it (`libyaml::parser` there).
struct Parser<'input> {
    /// Boxed because libyaml keeps a pointer to the parser itself (its read handler's data).
    sys: Box<MaybeUninit<sys::yaml_parser_t>>,
    _input: std::marker::PhantomData<&'input str>,
    done: bool,
}

impl<'input> Parser<'input> {
    fn new(input: &'input str) -> Option<Self> {
        let mut sys = Box::new(MaybeUninit::<sys::yaml_parser_t>::uninit());
        let parser = sys.as_mut_ptr();
        // SAFETY: `parser` points to writable memory for a parser, which initialize fills in;
        // the input outlives the parser (`'input`), and the parser never moves (boxed).
        unsafe {
            if sys::yaml_parser_initialize(parser).fail {
                return None;
            }
            sys::yaml_parser_set_encoding(parser, sys::YAML_UTF8_ENCODING);
            sys::yaml_parser_set_input_string(parser, input.as_ptr(), input.len() as u64);
        }
        Some(Self { sys, _input: std::marker::PhantomData, done: false })
    }

    /// The next event, or `None` after the stream's end or an error.
    fn next_event(&mut self) -> Option<(Event, Mark)> {
        if self.done {
            return None;
        }
        let parser = self.sys.as_mut_ptr();
        let mut raw = MaybeUninit::<sys::yaml_event_t>::uninit();
        // SAFETY: the parser was initialized in `new`; a successful parse fills the event in,
        // whose pointers (anchor, scalar value) are valid until `yaml_event_delete` below.
        unsafe {
            if sys::yaml_parser_parse(parser, raw.as_mut_ptr()).fail {
                self.done = true;
                return None;
            }
            let event = raw.assume_init_mut();
            let mark = Mark { line: event.start_mark.line, column: event.start_mark.column };
            let converted = match event.type_ {
                sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
                sys::YAML_DOCUMENT_START_EVENT => Event::DocumentStart,
                sys::YAML_ALIAS_EVENT => Event::Alias { anchor: c_bytes(event.data.alias.anchor).unwrap_or_default() },
                sys::YAML_SCALAR_EVENT => {
                    let scalar = event.data.scalar;
                    let shown = (scalar.length as usize).min(4 * MAX_KEY_SHOWN + 4);
                    let value = if scalar.value.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(scalar.value, shown).to_vec()
                    };
                    Event::Scalar { anchor: c_bytes(scalar.anchor), value }
                }
                sys::YAML_SEQUENCE_START_EVENT => {
                    Event::Start { anchor: c_bytes(event.data.sequence_start.anchor), mapping: false }
                }
                sys::YAML_MAPPING_START_EVENT => {
                    Event::Start { anchor: c_bytes(event.data.mapping_start.anchor), mapping: true }
                }
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
                _ => Event::Other,
            };
            if matches!(converted, Event::StreamEnd) {
                self.done = true;
            }
            sys::yaml_event_delete(event);
            Some((converted, mark))
        }
    }
}

/// The bytes of a NUL-terminated string libyaml allocated; `None` for a null pointer.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that stays valid during the call.
unsafe fn c_bytes(ptr: *const u8) -> Option<Vec<u8>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: as promised by the caller.
    Some(unsafe { std::ffi::CStr::from_ptr(ptr.cast()) }.to_bytes().to_vec())
}

impl Drop for Parser<'_> {
    fn drop(&mut self) {
        // SAFETY: initialized in `new` (a parser that failed to initialize is never built).
        unsafe { sys::yaml_parser_delete(self.sys.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> (String, String) {
        check(text).expect_err("should be refused")
    }

    #[test]
    fn events_are_read_as_yaml_serde_reads_them() {
        // Brackets in quotes, comments and block scalars are text, not nesting.
        let brackets = "[".repeat(100);
        let text = format!("a: '{brackets}'\nb: \"{brackets}\"\n# {brackets}\nc: |\n  {brackets}\nd: x{brackets}\n");
        assert_eq!(check(&text), Ok(()));
        let mut scan = Scan::default();
        let mut parser = Parser::new("k: &x [1, {a: b}]\nl: *x\n").expect("parser");
        let mut kinds = Vec::new();
        while let Some((event, _)) = parser.next_event() {
            kinds.push(match &event {
                Event::Scalar { value, .. } => String::from_utf8_lossy(value).into_owned(),
                Event::Alias { anchor } => format!("*{}", String::from_utf8_lossy(anchor)),
                Event::Start { mapping: true, .. } => "{".into(),
                Event::Start { mapping: false, .. } => "[".into(),
                Event::End => "end".into(),
                Event::StreamEnd | Event::DocumentStart | Event::Other => continue,
            });
            assert_eq!(scan.event(event), Ok(true));
        }
        assert_eq!(kinds, ["{", "k", "[", "1", "{", "a", "b", "end", "end", "l", "*x", "end"]);
        assert_eq!(scan.nodes, 1 + 1 + 5 + 1 + 5, "the alias counts as the five values it repeats");
    }

    #[test]
    fn depth_is_limited_with_the_field_and_line() {
        let ok = format!("a: {}{}\n", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert_eq!(check(&ok), Ok(()));
        let (field, message) = refused(&format!("a: {}", "[".repeat(MAX_DEPTH)));
        assert_eq!(field, format!("a{}", "[0]".repeat(MAX_DEPTH - 1)));
        assert!(message.contains("more than 32 levels") && message.ends_with("line 1 column 35"), "{message}");
        let block: String = (0..=MAX_DEPTH).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let (field, message) = refused(&block);
        assert_eq!(field, vec!["k"; MAX_DEPTH].join("."));
        assert!(message.ends_with("line 33 column 65"), "{message}");
    }

    #[test]
    fn aliases_count_as_what_they_repeat() {
        let list = format!("[{}]", vec!["'111122223333'"; 1000].join(", "));
        // The mapping, keys x and y, y's sequence, and the list once as written.
        let fits = (MAX_NODES - 4 - 1001) / 1001;
        let aliases = vec!["*a"; fits as usize].join(", ");
        assert_eq!(check(&format!("x: &a {list}\ny: [{aliases}]\n")), Ok(()));
        let (field, message) = refused(&format!("x: &a {list}\ny: [{aliases}, *a]\n"));
        assert_eq!(field, format!("y[{fits}]"));
        assert!(message.starts_with("alias *a: more than 250000 values"), "{message}");
        assert!(message.ends_with(&format!("line 2 column {}", 5 + 4 * fits)), "{message}");
        let (field, message) = refused("targets: &t [*t]\n");
        assert_eq!(field, "targets[0]");
        assert!(message.contains("inside the node it repeats"), "{message}");
        let tiny = format!("x: {{{}}}\n", vec!["a"; MAX_NODES as usize / 2].join(","));
        assert!(refused(&tiny).1.starts_with("more than 250000 values"), "no alias needed");
        let nested = format!("a: &a {}{}\nb: [[*a]]\n", "[".repeat(31), "]".repeat(31));
        assert!(refused(&nested).1.contains("alias *a nests"));
    }

    #[test]
    fn anchors_are_per_document_and_errors_left_to_yaml_serde() {
        assert_eq!(check("a: &a [1]\n---\nb: *a\n"), Ok(()), "an unknown alias is yaml_serde's to report");
        assert_eq!(check("a: [\n"), Ok(()));
        assert_eq!(check(""), Ok(()));
        let long = "k".repeat(100);
        let (field, _) = refused(&format!("{long}: {}", "[".repeat(MAX_DEPTH)));
        assert_eq!(field.chars().count(), MAX_KEY_SHOWN + 1 + 3 * (MAX_DEPTH - 1));
    }
}
