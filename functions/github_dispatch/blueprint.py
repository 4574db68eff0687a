"""The github_dispatch stage's triggers. Thin: binding -> typed input -> service -> output."""

import azure.durable_functions as df

bp = df.Blueprint()
