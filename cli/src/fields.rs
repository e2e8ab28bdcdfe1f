//! Field values from `--field F=VALUE`, `--field-file F=PATH` and `--field-stdin F`.
//!
//! Values go straight into [`SecretValue`]s; read buffers are allocated once at their final size
//! and zeroized, so no stray copy of a value is left in freed memory. Sizes are checked here,
//! before anything is sent, and reads are bounded so a huge file cannot exhaust memory. Error
//! messages name fields and paths, never values: a field name that does not look like a name
//! (perhaps a value typed in the wrong place) is refused without being echoed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;

use maestro_wire::SecretValue;
use maestro_wire::catalog::owners;
use maestro_wire::limits::{MAX_FIELD_BYTES, MAX_FIELDS};
use zeroize::{Zeroize, Zeroizing};

use crate::args::FieldArgs;

/// Bytes read at most from a file or stdin: a value at the limit plus a trailing `\r\n`, plus
/// one byte to tell that the input is longer than that.
const READ_CAP: usize = MAX_FIELD_BYTES + 3;

/// Longest field name accepted (the catalog's and generic names are far shorter).
const MAX_FIELD_NAME: usize = 128;

/// Why the fields given on the command line cannot be used. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    #[error("--{flag} expects {form}: the argument has no '='")]
    MissingEquals { flag: &'static str, form: &'static str },
    #[error(
        "--{flag} names a field that is not a valid field name (letters, digits and _, at most \
         {MAX_FIELD_NAME}); write {form}"
    )]
    BadName { flag: &'static str, form: &'static str },
    #[error("field '{0}' is given more than once; give each field once")]
    Repeated(String),
    #[error("field '{0}' is both set and removed; give it to only one of them")]
    SetAndRemoved(String),
    #[error("a secret has at most {MAX_FIELDS} fields; {0} were given")]
    TooMany(usize),
    #[error("field '{field}' is larger than the limit of {MAX_FIELD_BYTES} bytes; shorten it")]
    TooLarge { field: String },
    #[error("cannot read field '{field}' from {path}: {source}")]
    ReadFile { field: String, path: String, source: io::Error },
    #[error("cannot read field '{field}' from standard input: {source}")]
    ReadStdin { field: String, source: io::Error },
    #[error(
        "field '{field}' is not UTF-8 text; secret values are text (base64-encode binary data)"
    )]
    NotUtf8 { field: String },
    #[error("--owners {0}")]
    Owners(String),
}

/// Where one field's value comes from, before it is read.
enum Source {
    /// The value as given in argv (already a copy the caller owns).
    Inline(SecretValue),
    File(String),
    Stdin,
}

/// Reads every field the flags name, checking names, count and sizes. `removed` are the fields
/// an edit removes; naming one of them also as a value is an error.
pub fn collect(
    args: FieldArgs,
    removed: &[String],
) -> Result<BTreeMap<String, SecretValue>, FieldError> {
    if args.field_stdin.is_none() {
        return collect_from(args, removed, &mut io::empty());
    }
    let field = args.field_stdin.clone().unwrap_or_default();
    // On a terminal, ask for the value with echo off rather than waiting silently for EOF.
    if crate::terminal::interactive() {
        check_name(&field, "field-stdin", "F")?;
        let prompt = format!("value of {field} (hidden, one line, then Enter): ");
        let line = crate::terminal::read_hidden(&prompt, READ_CAP)
            .map_err(|source| FieldError::ReadStdin { field: field.clone(), source })?;
        return collect_from(args, removed, &mut &line[..]);
    }
    // Read fd 0 through a duplicate, not through `io::stdin()`, whose internal buffer would
    // keep a copy of the value that is never zeroized.
    let fd = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| FieldError::ReadStdin { field, source })?;
    collect_from(args, removed, &mut File::from(fd))
}

/// [`collect`] with the standard input given, for tests.
pub fn collect_from(
    args: FieldArgs,
    removed: &[String],
    stdin: &mut dyn Read,
) -> Result<BTreeMap<String, SecretValue>, FieldError> {
    let mut sources: Vec<(String, Source)> = Vec::new();
    for raw in args.field {
        let (name, value) = split_inline(raw)?;
        sources.push((name, Source::Inline(value)));
    }
    for raw in args.field_file {
        let (name, path) = split_pair(&raw, "field-file", "F=PATH")?;
        sources.push((name, Source::File(path)));
    }
    if let Some(name) = args.field_stdin {
        check_name(&name, "field-stdin", "F")?;
        sources.push((name, Source::Stdin));
    }
    if let Some(list) = args.owners {
        owners::parse(&list).map_err(FieldError::Owners)?;
        sources.push(("owners".to_owned(), Source::Inline(SecretValue::new(list))));
    }

    // Every name and the count are checked before any file is read.
    let mut seen = BTreeSet::new();
    for (name, _) in &sources {
        if !seen.insert(name.as_str()) {
            return Err(FieldError::Repeated(name.clone()));
        }
        if removed.iter().any(|r| r == name) {
            return Err(FieldError::SetAndRemoved(name.clone()));
        }
    }
    if sources.len() > MAX_FIELDS {
        return Err(FieldError::TooMany(sources.len()));
    }

    let mut fields = BTreeMap::new();
    for (name, source) in sources {
        let value = match source {
            Source::Inline(value) => value,
            Source::File(path) => read_file(&name, Path::new(&path))?,
            Source::Stdin => read_value(stdin)
                .map_err(|source| FieldError::ReadStdin { field: name.clone(), source })
                .and_then(|buf| into_value(&name, buf))?,
        };
        if value.len() > MAX_FIELD_BYTES {
            return Err(FieldError::TooLarge { field: name });
        }
        fields.insert(name, value);
    }
    Ok(fields)
}

/// Checks the names given to `--remove-field`.
pub fn check_removed(names: &[String]) -> Result<(), FieldError> {
    let mut seen = BTreeSet::new();
    for name in names {
        check_name(name, "remove-field", "F")?;
        if !seen.insert(name.as_str()) {
            return Err(FieldError::Repeated(name.clone()));
        }
    }
    Ok(())
}

/// Splits `F=VALUE`, moving the value into a [`SecretValue`] and zeroizing the argument.
fn split_inline(mut raw: String) -> Result<(String, SecretValue), FieldError> {
    let result = match raw.find('=') {
        None => Err(FieldError::MissingEquals { flag: "field", form: "F=VALUE" }),
        Some(eq) => {
            let name = &raw[..eq];
            check_name(name, "field", "F=VALUE")
                .map(|()| (name.to_owned(), SecretValue::new(raw[eq + 1..].to_owned())))
        }
    };
    raw.zeroize();
    result
}

fn split_pair(
    raw: &str,
    flag: &'static str,
    form: &'static str,
) -> Result<(String, String), FieldError> {
    let (name, rest) = raw.split_once('=').ok_or(FieldError::MissingEquals { flag, form })?;
    check_name(name, flag, form)?;
    Ok((name.to_owned(), rest.to_owned()))
}

fn check_name(name: &str, flag: &'static str, form: &'static str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_FIELD_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok { Ok(()) } else { Err(FieldError::BadName { flag, form }) }
}

fn read_file(field: &str, path: &Path) -> Result<SecretValue, FieldError> {
    let read_err = |source| FieldError::ReadFile {
        field: field.to_owned(),
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let buf = read_value(&mut file).map_err(read_err)?;
    into_value(field, buf)
}

/// Reads at most [`READ_CAP`] bytes into a buffer allocated once (so no reallocation leaves a
/// copy behind) and zeroized when dropped.
fn read_value(reader: &mut dyn Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; READ_CAP]);
    let mut len = 0;
    while len < READ_CAP {
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// Applies the newline rule and the size limit, and moves the bytes into a [`SecretValue`].
fn into_value(field: &str, mut buf: Zeroizing<Vec<u8>>) -> Result<SecretValue, FieldError> {
    strip_single_line_newline(&mut buf);
    if buf.len() > MAX_FIELD_BYTES {
        return Err(FieldError::TooLarge { field: field.to_owned() });
    }
    match String::from_utf8(std::mem::take(&mut *buf)) {
        Ok(text) => Ok(SecretValue::new(text)),
        Err(e) => {
            let mut bytes = e.into_bytes();
            bytes.zeroize();
            Err(FieldError::NotUtf8 { field: field.to_owned() })
        }
    }
}

/// Editors and `echo` end a file with a newline that is not part of a token; a PEM or JSON
/// document's content is kept byte-exact. So: strip exactly one trailing `\n` or `\r\n`, and
/// only when the rest holds no newline.
pub fn strip_single_line_newline(buf: &mut Vec<u8>) {
    let body = if buf.ends_with(b"\r\n") {
        buf.len() - 2
    } else if buf.ends_with(b"\n") {
        buf.len() - 1
    } else {
        return;
    };
    if !buf[..body].contains(&b'\n') {
        buf.truncate(body);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn args(field: &[&str], file: &[&str], stdin: Option<&str>) -> FieldArgs {
        FieldArgs {
            field: field.iter().map(|s| (*s).to_owned()).collect(),
            field_file: file.iter().map(|s| (*s).to_owned()).collect(),
            field_stdin: stdin.map(str::to_owned),
            owners: None,
        }
    }

    #[test]
    fn owners_is_the_owners_field_checked_first() {
        let mut a = args(&["token=ghp_x"], &[], None);
        a.owners = Some("alice,acme/infra".into());
        let f = collect_with(a, b"").unwrap();
        assert_eq!(f["owners"].expose(), "alice,acme/infra");
        let mut a = args(&[], &[], None);
        a.owners = Some("alice,../bob".into());
        let e = collect_with(a, b"").unwrap_err().to_string();
        assert!(e.starts_with("--owners has \"..\", which is no owner"), "{e}");
        let mut a = args(&["owners=x"], &[], None);
        a.owners = Some("y".into());
        assert!(matches!(collect_with(a, b""), Err(FieldError::Repeated(_))));
    }

    fn collect_with(
        a: FieldArgs,
        stdin: &[u8],
    ) -> Result<BTreeMap<String, SecretValue>, FieldError> {
        collect_from(a, &[], &mut &stdin[..])
    }

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn newline_rule() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"tok\n", b"tok"),
            (b"tok\r\n", b"tok"),
            (b"tok", b"tok"),
            (b"tok\n\n", b"tok\n\n"),
            (b"a\nb\n", b"a\nb\n"),
            (
                b"-----BEGIN X-----\nAAA\n-----END X-----\n",
                b"-----BEGIN X-----\nAAA\n-----END X-----\n",
            ),
            (b"{\"a\":1}\r\n", b"{\"a\":1}"),
            (b"\n", b""),
            (b"", b""),
            (b"tok\r", b"tok\r"),
        ];
        for (input, want) in cases {
            let mut buf = input.to_vec();
            strip_single_line_newline(&mut buf);
            assert_eq!(&buf, want, "input {:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn inline_file_and_stdin() {
        let single = file_with(b"s3cr3t-from-file\n");
        let pem = file_with(b"line1\nline2\n");
        let a = args(
            &["A=inline=with=equals"],
            &[&format!("B={}", single.path().display()), &format!("C={}", pem.path().display())],
            Some("D"),
        );
        let f = collect_with(a, b"from-stdin\r\n").unwrap();
        assert_eq!(f["A"].expose(), "inline=with=equals");
        assert_eq!(f["B"].expose(), "s3cr3t-from-file");
        assert_eq!(f["C"].expose(), "line1\nline2\n");
        assert_eq!(f["D"].expose(), "from-stdin");
    }

    #[test]
    fn repeated_name_is_refused_across_sources() {
        let file = file_with(b"x");
        let a = args(&["A=1"], &[&format!("A={}", file.path().display())], None);
        assert!(matches!(collect_with(a, b""), Err(FieldError::Repeated(n)) if n == "A"));
        let a = args(&["A=1", "A=2"], &[], None);
        assert!(matches!(collect_with(a, b""), Err(FieldError::Repeated(_))));
        let a = args(&["A=1"], &[], Some("A"));
        assert!(matches!(collect_with(a, b""), Err(FieldError::Repeated(_))));
    }

    #[test]
    fn set_and_removed_is_refused() {
        let a = args(&["A=1"], &[], None);
        let e = collect_from(a, &["A".to_owned()], &mut &b""[..]).unwrap_err();
        assert!(matches!(e, FieldError::SetAndRemoved(n) if n == "A"));
    }

    #[test]
    fn too_many_fields_is_refused_before_reading() {
        let many: Vec<String> = (0..=MAX_FIELDS).map(|i| format!("F{i}=v")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = collect_with(args(&many, &["Z=/nonexistent/file"], None), b"").unwrap_err();
        assert!(matches!(e, FieldError::TooMany(n) if n == MAX_FIELDS + 2), "{e}");
        let exactly: Vec<String> = (0..MAX_FIELDS).map(|i| format!("F{i}=v")).collect();
        let exactly: Vec<&str> = exactly.iter().map(String::as_str).collect();
        assert_eq!(collect_with(args(&exactly, &[], None), b"").unwrap().len(), MAX_FIELDS);
    }

    #[test]
    fn size_limit_at_the_boundary() {
        let at = "a".repeat(MAX_FIELD_BYTES);
        let over = "a".repeat(MAX_FIELD_BYTES + 1);
        // Inline.
        assert!(collect_with(args(&[&format!("A={at}")], &[], None), b"").is_ok());
        let e = collect_with(args(&[&format!("A={over}")], &[], None), b"").unwrap_err();
        assert!(matches!(&e, FieldError::TooLarge { field } if field == "A"));
        assert!(e.to_string().contains("'A'") && e.to_string().contains("65536"), "{e}");
        // File: the limit counts after the trailing newline is stripped.
        let f = file_with(format!("{at}\r\n").as_bytes());
        let ok = collect_with(args(&[], &[&format!("A={}", f.path().display())], None), b"");
        assert_eq!(ok.unwrap()["A"].len(), MAX_FIELD_BYTES);
        let f = file_with(over.as_bytes());
        let e = collect_with(args(&[], &[&format!("B={}", f.path().display())], None), b"");
        assert!(matches!(e, Err(FieldError::TooLarge { field }) if field == "B"));
        // Stdin, much larger than the limit: refused without reading it all.
        let huge = vec![b'x'; 10 * MAX_FIELD_BYTES];
        let e = collect_with(args(&[], &[], Some("C")), &huge);
        assert!(matches!(e, Err(FieldError::TooLarge { field }) if field == "C"));
    }

    #[test]
    fn bad_arguments_never_echo_a_value() {
        let e = collect_with(args(&["planted-value-no-equals"], &[], None), b"").unwrap_err();
        assert!(matches!(e, FieldError::MissingEquals { .. }));
        assert!(!e.to_string().contains("planted"));
        let e = collect_with(args(&["planted value=x"], &[], None), b"").unwrap_err();
        assert!(matches!(e, FieldError::BadName { .. }));
        assert!(!e.to_string().contains("planted"));
        let e = collect_with(args(&["=x"], &[], None), b"").unwrap_err();
        assert!(matches!(e, FieldError::BadName { .. }));
        let e = collect_with(args(&[], &["A"], None), b"").unwrap_err();
        assert!(matches!(e, FieldError::MissingEquals { flag: "field-file", .. }));
    }

    #[test]
    fn unreadable_and_binary_files_are_named() {
        let e = collect_with(args(&[], &["K=/nonexistent/key.pem"], None), b"").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("'K'") && text.contains("/nonexistent/key.pem"), "{text}");
        let f = file_with(&[0xff, 0xfe, 0x00]);
        let e = collect_with(args(&[], &[&format!("K={}", f.path().display())], None), b"");
        assert!(matches!(e, Err(FieldError::NotUtf8 { field }) if field == "K"));
    }

    #[test]
    fn errors_are_one_line() {
        let errors = [
            FieldError::MissingEquals { flag: "field", form: "F=VALUE" },
            FieldError::BadName { flag: "field", form: "F=VALUE" },
            FieldError::Repeated("A".into()),
            FieldError::TooMany(40),
            FieldError::TooLarge { field: "A".into() },
            FieldError::NotUtf8 { field: "A".into() },
        ];
        for e in errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    #[test]
    fn removed_names_are_checked() {
        assert!(check_removed(&["region".into(), "A_B".into()]).is_ok());
        assert!(matches!(check_removed(&["a".into(), "a".into()]), Err(FieldError::Repeated(_))));
        assert!(matches!(check_removed(&["a b".into()]), Err(FieldError::BadName { .. })));
    }
}
