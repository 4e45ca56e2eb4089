//! The value rules of the contract that utoipa's field attributes cannot spell (string maps, argv, signal names,
//! binary bodies), as OpenAPI schemas, and the limits they and the attributes state.
//!
//! The control plane validates every request against the document built from these schemas, so a limit here is
//! both documented and enforced; there is no second copy of it in a handler.

use utoipa::openapi::schema::{ArrayBuilder, KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Object, Schema};

/// A string with no NUL byte (Postgres cannot store one). The control plane adds it to every string schema that
/// has no pattern of its own.
pub const NO_NUL: &str = "^[^\\x00]*$";

/// Most entries of a string map (env, labels, selectors).
pub const MAX_MAP_ENTRIES: usize = 256;
/// Longest key of a string map, in characters.
pub const MAX_MAP_KEY: usize = 256;
/// Longest value of a string map, in characters.
pub const MAX_MAP_VALUE: usize = 32 * 1024;
/// Most arguments of a command.
pub const MAX_ARGS: usize = 4096;

/// The signals `POST .../signal` takes: a name with or without `SIG`, upper case, or its number (1 to 31).
pub const SIGNAL_PATTERN: &str = "^((SIG)?(HUP|INT|QUIT|ILL|TRAP|ABRT|BUS|FPE|KILL|USR1|SEGV|USR2|PIPE|ALRM|TERM|\
STKFLT|CHLD|CONT|STOP|TSTP|TTIN|TTOU|URG|XCPU|XFSZ|VTALRM|PROF|WINCH|IO|PWR|SYS)|[1-9]|[12][0-9]|3[01])$";

fn map(key_pattern: &str, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .max_properties(Some(MAX_MAP_ENTRIES))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(MAX_MAP_KEY))
                .pattern(Some(key_pattern)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new().schema_type(Type::String).max_length(Some(MAX_MAP_VALUE)).pattern(Some(NO_NUL)),
        ))
        .build()
}

/// An environment: at most 256 variables, names of 1 to 256 characters without `=`, values of at most 32 KiB
/// characters, no NUL anywhere.
pub fn env_map() -> Object {
    map(
        "^[^=\\x00]*$",
        "Environment variables: at most 256, names 1 to 256 characters without '=', values at most 32768 characters",
    )
}

/// Labels or a runner selector: at most 256 entries, keys of 1 to 256 characters, values of at most 32 KiB
/// characters, no NUL anywhere.
pub fn label_map() -> Object {
    map(NO_NUL, "At most 256 entries, keys 1 to 256 characters, values at most 32768 characters")
}

/// An argv: at most 4096 strings, the first (the program) not empty. Empty: the snapshot's default command.
pub fn argv() -> Schema {
    let arg = || ObjectBuilder::new().schema_type(Type::String).pattern(Some(NO_NUL));
    ArrayBuilder::new()
        .description(Some("argv: the program and its arguments (at most 4096; the program not empty)"))
        .prefix_items([Schema::Object(arg().min_length(Some(1)).build())])
        .items(arg())
        .max_items(Some(MAX_ARGS))
        .build()
        .into()
}

/// A signal name or number, as [`SIGNAL_PATTERN`] spells it.
pub fn signal() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A name, upper case, with or without SIG (\"SIGINT\", \"INT\"), or its number (1 to 31)"))
        .pattern(Some(SIGNAL_PATTERN))
        .build()
}

/// A body of raw bytes (a tar stream, a disk image).
#[derive(Debug, Clone, Copy)]
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> regex::Regex {
        // ECMA-262 `\x00` is the same in the regex crates' syntax.
        regex::Regex::new(p).unwrap()
    }

    #[test]
    fn the_signal_pattern_accepts_exactly_the_upper_case_names_and_numbers_of_the_runner_protocol() {
        let re = pattern(SIGNAL_PATTERN);
        for (num, name) in boxyard_proto::signal::SIGNALS {
            assert!(re.is_match(name), "{name}");
            assert!(re.is_match(&name[3..]), "{name} without SIG");
            assert!(re.is_match(&num.to_string()), "{num}");
        }
        for bad in ["", "0", "32", "SIG", "SIGFOO", "term", "TERM ", "015", "9x"] {
            assert!(!re.is_match(bad), "{bad:?} must be refused");
        }
    }

    #[test]
    fn the_no_nul_pattern_refuses_only_nul() {
        let re = pattern(NO_NUL);
        assert!(re.is_match(""));
        assert!(re.is_match("é \u{1} /x"));
        assert!(!re.is_match("a\0b"));
        assert!(!pattern("^[^=\\x00]*$").is_match("A=B"));
    }
}
