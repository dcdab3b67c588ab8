"""Plotly figures shared by the notebooks. Every number drawn comes from the data passed in."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def face_grid(
    rows: Mapping[str, np.ndarray],
    col_labels: Sequence[str] | None = None,
    title: str = "",
    gap: int = 2,
    scale: int = 2,
) -> go.Figure:
    """A mosaic of 48x48 grey faces: one row per condition (same images in every row, so pairs line up)."""
    names = list(rows)
    stacks = [np.asarray(rows[n]) for n in names]
    n, h, w = stacks[0].shape
    if any(s.shape != (n, h, w) for s in stacks):
        raise ValueError("every row must hold the same number of same-sized images")
    H, W = len(names) * (h + gap) - gap, n * (w + gap) - gap
    mosaic = np.full((H, W), 255, dtype=np.uint8)
    for r, s in enumerate(stacks):
        for c in range(n):
            mosaic[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = s[c]
    fig = px.imshow(mosaic, binary_string=True, binary_format="png")
    fig.update_layout(
        title=title,
        width=max(420, W * scale + 160),
        height=H * scale + 120,
        margin=dict(l=140, r=10, t=50 if title else 10, b=40),
    )
    fig.update_yaxes(tickmode="array", tickvals=[r * (h + gap) + h / 2 for r in range(len(names))], ticktext=names, showgrid=False)
    if col_labels is not None:
        fig.update_xaxes(tickmode="array", tickvals=[c * (w + gap) + w / 2 for c in range(n)], ticktext=list(col_labels), showgrid=False)
    else:
        fig.update_xaxes(showticklabels=False)
    return fig


def class_counts(counts: pd.DataFrame, title: str = "Images per class") -> go.Figure:
    """Grouped bars from a class x split table."""
    long = counts.reset_index().melt(id_vars=counts.index.name or "index", var_name="split", value_name="images")
    return px.bar(long, x=counts.index.name or "index", y="images", color="split", barmode="group", title=title, text_auto=True)


def distribution(df: pd.DataFrame, x: str, y: str, color: str | None = None, title: str = "", points: bool = False) -> go.Figure:
    fig = px.box(df, x=x, y=y, color=color, title=title, points="outliers" if points else False)
    fig.update_layout(xaxis_tickangle=-30)
    return fig


def table_heatmap(table: pd.DataFrame, title: str = "", fmt: str = ".2f", zmin: float | None = None, zmax: float | None = None, colorscale: str = "Viridis") -> go.Figure:
    fig = px.imshow(table, text_auto=fmt, aspect="auto", zmin=zmin, zmax=zmax, color_continuous_scale=colorscale, title=title)
    fig.update_xaxes(side="top")
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(table.index))), ticktext=[str(i) for i in table.index])
    fig.update_layout(height=max(360, 24 * len(table.index) + 160))
    return fig


def roc_curves(curves: Mapping[str, pd.DataFrame], aucs: Mapping[str, float], title: str = "") -> go.Figure:
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=c["fpr"], y=c["tpr"], mode="lines", name=f"{name} (AUC {aucs[name]:.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance", hoverinfo="skip"))
    fig.update_layout(title=title, xaxis_title="false-alarm rate (clean flagged)", yaxis_title="hit rate (degraded flagged)", width=720, height=520)
    return fig


def bar(df: pd.DataFrame, x: str, y: str, title: str = "", log_y: bool = False, color: str | None = None) -> go.Figure:
    return px.bar(df, x=x, y=y, color=color, log_y=log_y, title=title, text_auto=".3g")


def rgb_row(images: np.ndarray, title: str = "") -> go.Figure:
    """A row of RGB images (N, H, W, 3) uint8, side by side."""
    fig = px.imshow(np.concatenate(list(images), axis=1), binary_string=True, title=title)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def confusion_grid(matrices: Mapping[str, np.ndarray], labels: Sequence[str], title: str = "") -> go.Figure:
    """Row-normalised confusion matrices side by side (true class down, predicted across)."""
    from plotly.subplots import make_subplots

    names = list(matrices)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.06)
    for k, n in enumerate(names, start=1):
        fig.add_trace(go.Heatmap(z=matrices[n], x=list(labels), y=list(labels), zmin=0, zmax=1, colorscale="Blues",
                                 showscale=k == len(names), text=np.round(matrices[n], 2), texttemplate="%{text}"), 1, k)
        fig.update_yaxes(autorange="reversed", row=1, col=k)
    fig.update_layout(title=title, height=420, width=max(520, 380 * len(names)))
    return fig


def robustness_curves(df: pd.DataFrame, classifier: str, color: str = "restorer") -> go.Figure:
    """Accuracy vs severity, one line per ``color`` value (restorer, or model), one panel per degradation family."""
    d = df[(df["classifier"] == classifier) & (df["family"] != df["condition"])]  # chains have no severity axis
    fig = px.line(d, x="severity", y="accuracy", color=color, facet_col="family", markers=True,
                  error_y=d["accuracy_hi"] - d["accuracy"], error_y_minus=d["accuracy"] - d["accuracy_lo"],
                  title=f"{classifier}: accuracy vs severity (95% bootstrap intervals)")
    fig.update_xaxes(matches=None)
    return fig


def true_class_probability(proba: Mapping[str, np.ndarray], labels: np.ndarray, title: str = "") -> go.Figure:
    """Distribution of the probability given to the true class, per condition (violin)."""
    long = pd.concat([pd.DataFrame({"condition": k, "p(true class)": np.take_along_axis(np.nan_to_num(p), labels[:, None], 1)[:, 0]})
                      for k, p in proba.items()])
    return px.violin(long, x="condition", y="p(true class)", box=True, points=False, title=title)


def reliability(curves: Mapping[str, pd.DataFrame], eces: Mapping[str, float], title: str = "") -> go.Figure:
    fig = go.Figure()
    for name, c in curves.items():
        fig.add_trace(go.Scatter(x=c["confidence"], y=c["accuracy"], mode="lines+markers", name=f"{name} (ECE {eces[name]:.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="perfect calibration"))
    fig.update_layout(title=title, xaxis_title="confidence (top class)", yaxis_title="accuracy", width=700, height=500)
    return fig


def ovr_roc(labels: np.ndarray, proba: np.ndarray, classes: Sequence[str], title: str = "") -> go.Figure:
    """One-vs-rest ROC curve per class (scikit-learn), AUC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig = go.Figure()
    p = np.nan_to_num(proba)
    for k, c in enumerate(classes):
        pos = labels == k
        if 0 < pos.sum() < len(pos):
            fpr, tpr, _ = roc_curve(pos, p[:, k])
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{c} (AUC {roc_auc_score(pos, p[:, k]):.3f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="grey"), name="chance"))
    fig.update_layout(title=title, xaxis_title="false positive rate", yaxis_title="true positive rate", width=700, height=520)
    return fig


def scatter(df: pd.DataFrame, x: str, y: str, color: str | None = None, hover: Sequence[str] = (), title: str = "") -> go.Figure:
    return px.scatter(df, x=x, y=y, color=color, hover_data=list(hover), title=title)


def rgb_mosaic(image: np.ndarray, row_labels: Sequence[str], title: str = "") -> go.Figure:
    """An RGB mosaic with one label per equal-height row."""
    fig = px.imshow(image, binary_string=True, title=title)
    h = image.shape[0] / len(row_labels)
    fig.update_yaxes(tickmode="array", tickvals=[h * (i + 0.5) for i in range(len(row_labels))], ticktext=list(row_labels))
    fig.update_xaxes(showticklabels=False)
    return fig
