use super::*;

fn fname(s: &str) -> FileName {
    FileName::parse(s).unwrap()
}

#[test]
fn three_share_spellings() {
    for s in [
        "\\Device\\Mup\\FS1\\Data\\dir\\f.txt",
        "\\\\fs1\\data\\DIR\\F.TXT",
        "\\\\?\\UNC\\fs1\\DATA\\dir\\f.txt",
        "\\??\\UNC\\fs1\\data\\dir\\f.txt",
        "//fs1/data/dir/f.txt",
        "\\Device\\Mup\\;LanmanRedirector\\;Z:000000000001a2b3\\fs1\\data\\dir\\f.txt",
    ] {
        let f = fname(s);
        assert_eq!(f.share(), Some("\\\\fs1\\data"), "{s}");
        assert_eq!(f.relative(), "dir\\f.txt", "{s}");
        assert_eq!(f.extension(), Some("txt"));
    }
    for s in [
        "\\\\fs1\\data",
        "\\Device\\Mup\\fs1\\data\\",
        "\\\\?\\UNC\\FS1\\Data",
    ] {
        assert_eq!(normalize_share(s).unwrap(), "\\\\fs1\\data", "{s}");
    }
}

#[test]
fn redirector_prefixes() {
    let f = fname("\\Device\\Mup\\;WebDavRedirector\\dav.example@SSL\\DavWWWRoot\\a.db");
    assert_eq!(f.share(), Some("\\\\dav.example@ssl\\davwwwroot"));
    let f = fname("\\Device\\Mup\\;RdpDr\\;:1\\tsclient\\C\\Users\\x.txt");
    assert_eq!(f.share(), Some("\\\\tsclient\\c"));
    assert_eq!(f.relative(), "users\\x.txt");
}

#[test]
fn share_errors() {
    let not = Err(NameError::Invalid(DecodeError::Name {
        field: "share",
        problem: NameProblem::NotAShare,
    }));
    assert_eq!(normalize_share("\\\\fs1"), not);
    assert_eq!(normalize_share("\\\\fs1\\data\\sub"), not);
    assert_eq!(normalize_share("C:\\data"), not);
    assert!(normalize_share("\\\\fs*\\data").is_err());
}

#[test]
fn local_and_streams_and_trailing() {
    let f = fname("C:\\Dir\\Report.DB. ");
    assert_eq!(f.share(), None);
    assert_eq!(f.relative(), "dir\\report.db");
    let f = fname("\\Device\\HarddiskVolume3\\x\\a.db:Zone.Identifier:$DATA");
    assert_eq!(f.relative(), "x\\a.db");
    assert_eq!(f.extension(), Some("db"));
    assert!(fname("\\\\s\\h\\PROGRA~1\\x").has_short_name_component());
    assert!(!fname("\\\\s\\h\\program files\\x").has_short_name_component());
}

#[test]
fn dotdot_rejected() {
    assert_eq!(
        FileName::parse("\\\\s\\h\\a\\..\\b"),
        Err(NameError::Invalid(DecodeError::Name {
            field: "file name",
            problem: NameProblem::DotDotComponent
        }))
    );
    assert!(PathGlob::new("../x").is_err());
    assert!(FileName::parse("\\\\s\\h\\a\\. \\b").is_err());
    assert!(FileName::parse("\\\\s\\h\\...\\b").is_err());
    assert!(PathGlob::new("a/.. /x").is_err());
    assert!(normalize_share("\\\\s\\..").is_err());
    assert!(PathGlob::new("a/./x").is_err());
}

#[test]
fn unicode_folding() {
    assert_eq!(fold("ΣΑΣ"), fold("σας"));
    assert_eq!(fold_char('\u{212A}'), 'k'); // Kelvin sign
    assert_eq!(fold_char('ſ'), 's');
    assert_eq!(fold_char('İ'), 'İ');
    assert_eq!(fold_char('ß'), 'ß');
    assert_eq!(fold_char('ẞ'), 'ß');
    assert_eq!(fold("ÄÖÜ"), "äöü");
    assert!(glob_component(&fold("STRASSE*"), "strasse1"));
    assert!(!glob_component(&fold("straße"), "strasse"));
}

#[test]
fn globs() {
    let g = PathGlob::new("**/*.db").unwrap();
    assert!(g.matches("a.db"));
    assert!(g.matches("x\\y\\a.db"));
    assert!(!g.matches("x\\y\\a.dbx"));
    let g = PathGlob::new("logs/*").unwrap();
    assert!(g.matches("logs\\a.txt"));
    assert!(!g.matches("logs\\sub\\a.txt"));
    assert!(!g.matches("logs"));
    let g = PathGlob::new("LOGS/**").unwrap();
    assert!(g.matches("logs\\sub\\a.txt"));
    assert!(g.matches("logs"));
    let g = PathGlob::new("a/**/b/*.m?f").unwrap();
    assert!(g.matches("a\\b\\x.mdf"));
    assert!(g.matches("a\\q\\r\\b\\x.mdf"));
    assert!(!g.matches("a\\q\\r\\c\\x.mdf"));
    assert!(!g.matches("a\\b\\x.mdff"));
    let g = PathGlob::new("**").unwrap();
    assert!(g.matches("") && g.matches("a\\b"));
    assert_eq!(
        PathGlob::new("a**/b"),
        Err(NameError::Invalid(DecodeError::Name {
            field: "path",
            problem: NameProblem::BadRecursiveWildcard
        }))
    );
    assert!(PathGlob::new("").is_err());
    assert!(PathGlob::new("a//b").is_err());
    assert!(glob_component("*a*b*c", "xxaybzc"));
    assert!(!glob_component("*a*b*c", "xxaybz"));
    assert!(glob_component("?é", "XÉ"));
}

#[test]
fn extensions_and_process() {
    assert_eq!(normalize_extension(".DB").unwrap(), "db");
    assert!(normalize_extension("").is_err());
    assert!(normalize_extension("a.b").is_err());
    assert!(normalize_extension("d|b").is_err());
    assert_eq!(normalize_process("SQLSERVR.EXE").unwrap(), "sqlservr.exe");
    assert!(normalize_process("a\\b.exe").is_err());
    assert_eq!(
        image_file_name("\\Device\\HarddiskVolume2\\Windows\\x.exe"),
        "x.exe"
    );
}
