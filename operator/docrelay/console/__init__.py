"""The web console (`docrelay console`, or the chart's `console.enabled`): pages over the API,
acting with each user's own credentials. See docs/console.md."""
