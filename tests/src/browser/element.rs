//! An element of the current page, found by CSS selector, and what a test does with it.

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{Value, json};

use super::Browser;

/// An element found on the current page.
pub struct Element<'a> {
    pub(super) browser: &'a Browser,
    pub(super) id: String,
}

impl Element<'_> {
    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let path = format!("/element/{}{path}", self.id);
        self.browser.command(method, &path, body).await
    }

    /// Its rendered text.
    pub async fn text(&self) -> Result<String> {
        let value = self.command(Method::GET, "/text", None).await?;
        value
            .as_str()
            .map(str::to_string)
            .context("the text is not a string")
    }

    /// Clicks it.
    pub async fn click(&self) -> Result<()> {
        self.command(Method::POST, "/click", Some(json!({})))
            .await?;
        Ok(())
    }

    /// Types `text` into it.
    pub async fn type_text(&self, text: &str) -> Result<()> {
        self.command(Method::POST, "/value", Some(json!({ "text": text })))
            .await?;
        Ok(())
    }

    /// Its attribute `name` (none when absent).
    pub async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let value = self
            .command(Method::GET, &format!("/attribute/{name}"), None)
            .await?;
        Ok(value.as_str().map(str::to_string))
    }
}
