// Application Insights on the Log Analytics workspace, with local (key) authentication off: each app
// sends telemetry with its own identity, which therefore needs Monitoring Metrics Publisher here (on this
// component only). Workspace-based: its data already lands in the workspace, so it has no diagnostic setting.

param name string
param location string
param tags object = {}
param workspaceResourceId string
@description('Principal ids of the four apps\' identities.')
param appPrincipalIds array

resource component 'Microsoft.Insights/components@2020-02-02' = {
  name: name
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspaceResourceId
    DisableLocalAuth: true
    IngestionMode: 'LogAnalytics'
  }
}

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for appPrincipalId in appPrincipalIds: {
  scope: component
  name: guid(component.id, appPrincipalId, monitoringMetricsPublisher)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}]

output name string = component.name
// Not a secret: it names the resource and ingestion endpoint; with local auth off it grants nothing.
output connectionString string = component.properties.ConnectionString
