from crmseg.cli.main import app

app(prog_name="crmseg")
