// One function app on its own Flex Consumption plan, running the one Python package with the stage
// named in its AL_STAGES app setting, as its own user-assigned identity (one identity per app: issue 20, item 6).
//
// Its host storage (AzureWebJobsStorage, the Flex Consumption deployment package, Durable Functions' task hub
// for the dispatch app) is an account of its own, `hostStorageName`: the host needs Storage Blob Data Owner on
// the account it uses, and the azure-webjobs-secrets container there holds the app's function and master keys.
// On a shared account every app could read every other app's keys (the internet-facing collector the dispatch
// app's master key); with one account per app, the loop's data account (storage.bicep) carries container- and
// queue-scoped grants only (storage-roles.bicep).
//
// Inbound: the collector is public (the Azure ML online endpoint posts to it from Microsoft-managed addresses);
// the others deny by access restrictions except `allowedServiceTags` (the label app: AzureEventGrid, which
// delivers BlobCreated to its blobs extension) and `allowedIpRanges` (the label app: Label Studio's outbound
// addresses for the annotation webhook; all three: the operator's ranges for the admin routes). The SCM site
// keeps its own rules (allow): `azd deploy` publishes the package there (Flex Consumption's one deployment
// path), authenticated with Entra ID. publicNetworkAccess stays Enabled for the same reason (Disabled would
// close the SCM site too); see infra/checkov-baseline.yaml.

param name string
param location string
param tags object = {}

@description('The stage this app hosts (azd deploys the same package to each app; the service name tags it).')
param stage string
param azdServiceName string

@description('The app\'s own user-assigned identity: resource id, client id and principal (object) id.')
param identityId string
param identityClientId string
param identityPrincipalId string

@description('The app\'s own host storage account (3-24 lowercase letters and digits) and its package container.')
param hostStorageName string
param deploymentContainerName string

@description('Durable Functions (the dispatch app): its task hub needs queues and tables on the host storage.')
param durableTaskHub bool = false
@description('A blob trigger (the label app): the blob extension uses queues on the host storage too.')
param blobTrigger bool = false

param applicationInsightsConnectionString string
@description('Log Analytics workspace the app\'s and its host storage\'s diagnostic settings send to.')
param logAnalyticsWorkspaceId string

@description('The stage\'s AL_* settings (built in main.bicep).')
param appSettings object

@description('true: anyone may call the app (its routes still take a function key); false: deny all but the rules below.')
param publicInbound bool = false
@description('Service tags allowed in when not public (e.g. AzureEventGrid).')
param allowedServiceTags array = []
@description('IPv4 addresses or CIDR ranges allowed in when not public.')
param allowedIpRanges array = []

param pythonVersion string = '3.11'
param instanceMemoryMB int = 2048
param maximumInstanceCount int = 40

// Built-in role definition ids (stable across tenants).
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

// --- the app's own host storage ---------------------------------------------------------------------------
// Why its network stays open: Flex Consumption without virtual network integration reaches its host storage
// over the public endpoint from no fixed address, and App Service is not one of the services the storage
// firewall trusts (see infra/checkov-baseline.yaml). Shared keys are off: the host signs in with the identity.
resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: hostStorageName
  location: location
  tags: union(tags, { 'al-role': 'host', 'al-stage': stage })
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource hostQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource hostTables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: { publicAccess: 'None' }
}

// The host's own account, so account scope: the host creates its containers (azure-webjobs-hosts,
// azure-webjobs-secrets, the task hub's) itself. Blob Data Owner is what the host storage needs; queues and
// tables only for Durable Functions and the blob extension.
var hostRoles = concat([storageBlobDataOwner], durableTaskHub || blobTrigger ? [storageQueueDataContributor] : [],
  durableTaskHub ? [storageTableDataContributor] : [])

resource hostRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in hostRoles: {
  scope: hostStorage
  name: guid(hostStorage.id, identityPrincipalId, role)
  properties: {
    principalId: identityPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

// Audit logs of the host storage (reads, writes, deletes per service) and its metrics.
resource hostStorageMetrics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: hostStorage
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

resource hostBlobLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: hostBlobs
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

resource hostQueueLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: hostQueues
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

resource hostTableLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: hostTables
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
  }
}

// --- the app -----------------------------------------------------------------------------------------------
resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${name}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

// Platform settings (not read by the package's Settings; consumed by the Functions host, azure-identity
// and the OpenTelemetry distro). Every client id is this app's own identity.
var platformSettings = {
  AzureWebJobsStorage__accountName: hostStorage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  // DefaultAzureCredential picks the user-assigned identity by this client id.
  AZURE_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  // Python worker: send the worker's logs and traces through OpenTelemetry (azure-monitor-opentelemetry).
  PYTHON_ENABLE_OPENTELEMETRY: 'true'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
}

// Access restrictions of the main site: an implicit deny after the allow rules (default action Deny).
var serviceTagRules = [for (tag, i) in allowedServiceTags: {
  name: 'allow-${toLower(tag)}'
  action: 'Allow'
  tag: 'ServiceTag'
  ipAddress: tag
  priority: 100 + i
}]
var ipRangeRules = [for (cidr, i) in allowedIpRanges: {
  name: 'allow-ip-${i}'
  action: 'Allow'
  tag: 'Default'
  ipAddress: contains(cidr, '/') ? cidr : '${cidr}/32'
  priority: 200 + i
}]

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': azdServiceName, 'al-stage': stage })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identityId}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    // Key Vault references (AL_GITHUB_TOKEN, AL_LABEL_STUDIO_TOKEN) resolve with the user-assigned identity.
    keyVaultReferenceIdentity: identityId
    // No ftpsState (nor linuxFxVersion & co.): site properties Flex Consumption does not support; the
    // runtime and the scale live in functionAppConfig below.
    siteConfig: {
      minTlsVersion: '1.2'
      ipSecurityRestrictionsDefaultAction: publicInbound ? 'Allow' : 'Deny'
      ipSecurityRestrictions: publicInbound ? [] : concat(serviceTagRules, ipRangeRules)
      // The SCM site (where `azd deploy` publishes the package) does not follow the main site's rules.
      scmIpSecurityRestrictionsUseMain: false
      scmIpSecurityRestrictionsDefaultAction: 'Allow'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: pythonVersion }
    }
  }
  dependsOn: [deploymentContainer, hostRoleAssignments]

  resource settings 'config' = {
    name: 'appsettings'
    properties: union(platformSettings, appSettings)
  }
}

// The Functions host's logs (FunctionAppLogs) and the app's metrics.
resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  scope: app
  name: 'to-log-analytics'
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'allLogs', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output name string = app.name
output hostName string = app.properties.defaultHostName
output hostStorageName string = hostStorage.name
