//! Function names, partial and full ARNs, and qualifiers, parsed once at the edge.
//!
//! AWS accepts, wherever a `FunctionName` goes (botocore's `FunctionName` /
//! `NamespacedFunctionName` patterns):
//!
//! * `my-function` (≤ 64 characters of `[a-zA-Z0-9-_]`), `my-function:QUALIFIER`;
//! * partial ARNs `123456789012:function:my-function[:QUALIFIER]` and
//!   `REGION:123456789012:function:my-function[:QUALIFIER]`;
//! * `arn:PARTITION:lambda:REGION:123456789012:function:my-function[:QUALIFIER]`.
//!
//! A qualifier is `$LATEST`, a version number, or an alias name. An ARN naming another account
//! or region than lambox's is a function that does not exist here (404).

use crate::error::{self, ApiError};

/// A version or alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// `$LATEST`, the mutable version.
    Latest,
    /// A published version, 1, 2, …
    Version(u64),
    /// An alias name (never all digits).
    Alias(String),
}

impl Qualifier {
    /// Parses a qualifier as it appears after a `:` or in `?Qualifier=`.
    pub fn parse(s: &str) -> Result<Qualifier, ApiError> {
        if s == "$LATEST" {
            return Ok(Qualifier::Latest);
        }
        if s.is_empty()
            || s.len() > 128
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(error::validation(
                s,
                "qualifier",
                "Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)",
            ));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Qualifier::Version(n)),
                _ => Err(error::invalid_parameter(&format!(
                    "Invalid version number: {s}"
                ))),
            };
        }
        Ok(Qualifier::Alias(s.to_owned()))
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Qualifier::Latest => f.write_str("$LATEST"),
            Qualifier::Version(n) => write!(f, "{n}"),
            Qualifier::Alias(a) => f.write_str(a),
        }
    }
}

/// A function name as a caller gave it, resolved against lambox's account and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    /// The bare name.
    pub name: String,
    /// The qualifier carried in the name (`name:1`, `…:function:name:alias`), if any.
    pub qualifier: Option<Qualifier>,
    /// An ARN (partial or full) naming another account or region: nothing here matches it.
    pub foreign: bool,
}

/// Whether `s` is a valid bare function name (1–64 of `[a-zA-Z0-9-_]`).
pub fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn valid_region(s: &str) -> bool {
    // [a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d, loosely: lower-case words and a final digit.
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].len() == 1
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

fn valid_partition(s: &str) -> bool {
    s.strip_prefix("aws")
        .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'))
}

const NAME_PATTERN: &str = "(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{1}:)?(\\d{12}:)?(function:)?([a-zA-Z0-9-_]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?";

impl FunctionRef {
    /// Parses `input` (from the request path, or a body's `FunctionName`). `account` and
    /// `region` are lambox's own. `allow_qualifier` is false where AWS takes only an
    /// unqualified name (CreateFunction, PutFunctionConcurrency, aliases…).
    pub fn parse(
        input: &str,
        account: &str,
        region: &str,
        allow_qualifier: bool,
    ) -> Result<FunctionRef, ApiError> {
        let bad = || {
            error::validation(
                input,
                "functionName",
                &format!("Member must satisfy regular expression pattern: {NAME_PATTERN}"),
            )
        };
        if input.is_empty() || input.len() > 140 {
            return Err(error::validation(
                input,
                "functionName",
                "Member must have length less than or equal to 140",
            ));
        }
        let parts: Vec<&str> = input.split(':').collect();
        let (arn_region, arn_account, rest): (Option<&str>, Option<&str>, &[&str]) =
            if parts[0] == "arn" {
                // arn:PARTITION:lambda:REGION:ACCOUNT:function:NAME[:Q]
                if parts.len() < 7
                    || !valid_partition(parts[1])
                    || parts[2] != "lambda"
                    || parts[5] != "function"
                {
                    return Err(bad());
                }
                (Some(parts[3]), Some(parts[4]), &parts[6..])
            } else if parts.len() >= 4 && parts[2] == "function" {
                (Some(parts[0]), Some(parts[1]), &parts[3..])
            } else if parts.len() >= 3 && parts[1] == "function" {
                (None, Some(parts[0]), &parts[2..])
            } else {
                (None, None, &parts[..])
            };
        if arn_region.is_some_and(|r| !valid_region(r))
            || arn_account.is_some_and(|a| !valid_account(a))
        {
            return Err(bad());
        }
        let (name, qualifier) = match rest {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            _ => return Err(bad()),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad());
        }
        if name.len() > 64 {
            return Err(error::validation(
                input,
                "functionName",
                "Member must have length less than or equal to 64",
            ));
        }
        let qualifier = match qualifier {
            None => None,
            Some(_) if !allow_qualifier => {
                return Err(error::invalid_parameter(&format!(
                    "Unqualified function name expected, got {input}"
                )))
            }
            Some(q) => Some(Qualifier::parse(q).map_err(|_| bad())?),
        };
        Ok(FunctionRef {
            name: name.to_owned(),
            qualifier,
            foreign: arn_account.is_some_and(|a| a != account)
                || arn_region.is_some_and(|r| r != region),
        })
    }

    /// The effective qualifier: the one in the name, or `?Qualifier=`; both must agree.
    pub fn with_query_qualifier(mut self, query: Option<&str>) -> Result<FunctionRef, ApiError> {
        let Some(q) = query else { return Ok(self) };
        let q = Qualifier::parse(q)?;
        match &self.qualifier {
            Some(existing) if *existing != q => Err(error::invalid_parameter(
                "The derived qualifier from the function name does not match the specified qualifier.",
            )),
            _ => {
                self.qualifier = Some(q);
                Ok(self)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "000000000000";
    const REGION: &str = "us-east-1";

    fn parse(s: &str) -> Result<FunctionRef, ApiError> {
        FunctionRef::parse(s, ACCT, REGION, true)
    }

    #[test]
    fn accepts_every_form_aws_accepts() {
        let plain = FunctionRef {
            name: "my-fn_1".into(),
            qualifier: None,
            foreign: false,
        };
        assert_eq!(parse("my-fn_1").expect("ok"), plain);
        assert_eq!(parse("000000000000:function:my-fn_1").expect("ok"), plain);
        assert_eq!(
            parse("us-east-1:000000000000:function:my-fn_1").expect("ok"),
            plain
        );
        assert_eq!(
            parse("arn:aws:lambda:us-east-1:000000000000:function:my-fn_1").expect("ok"),
            plain
        );
        let q = parse("arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST").expect("ok");
        assert_eq!(q.qualifier, Some(Qualifier::Latest));
        assert_eq!(
            parse("f:7").expect("ok").qualifier,
            Some(Qualifier::Version(7))
        );
        assert_eq!(
            parse("f:live").expect("ok").qualifier,
            Some(Qualifier::Alias("live".into()))
        );
        assert!(
            parse("arn:aws:lambda:eu-west-1:000000000000:function:f")
                .expect("ok")
                .foreign
        );
        assert!(parse("111111111111:function:f").expect("ok").foreign);
    }

    #[test]
    fn refuses_what_aws_refuses() {
        for bad in [
            "",
            "has space",
            "a:b:c:d:e:f",
            "arn:aws:s3:us-east-1:000000000000:function:f",
            "arn:aws:lambda:us-east-1:12345:function:f",
            "f:bad.qualifier",
            &"x".repeat(65),
            &"x".repeat(141),
        ] {
            let e = parse(bad).expect_err("must fail");
            assert_eq!(e.status, 400, "{bad:?}");
        }
        assert_eq!(
            FunctionRef::parse("f:1", ACCT, REGION, false)
                .expect_err("must fail")
                .code,
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn name_and_query_qualifiers_must_agree() {
        let r = parse("f:2").expect("ok");
        assert_eq!(
            r.clone()
                .with_query_qualifier(Some("2"))
                .expect("ok")
                .qualifier,
            Some(Qualifier::Version(2))
        );
        assert_eq!(
            r.with_query_qualifier(Some("3"))
                .expect_err("must fail")
                .code,
            "InvalidParameterValueException"
        );
        assert_eq!(
            parse("f")
                .expect("ok")
                .with_query_qualifier(Some("$LATEST"))
                .expect("ok")
                .qualifier,
            Some(Qualifier::Latest)
        );
    }
}
