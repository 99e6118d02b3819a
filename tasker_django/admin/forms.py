"""Forms of the operator actions' confirmation pages."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=_("Reason"),
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=_("Recorded with your name in the task's event timeline."),
    )


class RetryStepForm(ReasonForm):
    reset_downstream = forms.BooleanField(
        label=_("Also reset the steps downstream of this one"),
        required=False,
        help_text=_(
            "Steps that depend on this one (directly or not) go back to pending and run "
            "again after it. Needed to retry a step that already finished."
        ),
    )


class ResolveStepForm(ReasonForm):
    results = forms.CharField(
        label=_("Results (JSON object)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60, "class": "tasker-mono"}),
        help_text=_(
            "What the steps that depend on this one will read as its results. "
            "Empty keeps the step's current results."
        ),
    )

    def clean_results(self) -> dict[str, Any] | None:
        text = self.cleaned_data["results"].strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(_("Not valid JSON: %(error)s"), params={"error": exc})
        if not isinstance(value, dict):
            raise forms.ValidationError(_("The results must be a JSON object ({...})."))
        return value
